"""The soak (bench/soak.sh runs it): the gateway with a realistic configuration, steady
mixed load, a fault every few minutes, a sample every 10 s, then the verdict.

    soak.py --minutes N --gateway PATH --out DIR
"""
import argparse
import asyncio
import signal
import sys
import time

from faults import Fault, Faults, Flaky
from load import Load, Record
from measure import SAMPLE_EVERY, Sampler
from world import World, free_port, wait_until
import report


def schedule(minutes):
    """(first fault at, one every, how long a lasting fault lasts), in seconds. An hour:
    from the 2nd minute, one every 150 s, lasting 60 s. Shorter runs pack the rotation in."""
    total = minutes * 60
    if minutes >= 30:
        return 120, 150, 60
    every = max(15, (total - 60) / (len(Faults.ORDER) + 1))
    return 30, every, min(60, every * 0.6)


async def soak(world, minutes):
    rec = Record()
    flaky = Flaky()
    world.flaky_port = await flaky.start(free_port())
    await asyncio.to_thread(setup, world)
    sampler = Sampler(world, rec, world.out / "samples.csv")
    first, every, hold = schedule(minutes)
    faults = Faults(world, rec, sampler, flaky, hold)
    load = Load(world, rec, minutes)
    load.start()
    end = sampler.start + minutes * 60

    async def sample_loop():
        while True:
            await asyncio.sleep(SAMPLE_EVERY - (time.time() - sampler.start) % SAMPLE_EVERY)
            try:
                row = await asyncio.to_thread(sampler.sample)
            except Exception as e:  # noqa: BLE001 - a gap in the samples is reported
                faults.done.append(Fault("sampler", time.time(), time.time(),
                                         problems=[f"a sample failed: {type(e).__name__}: {e}"]))
                continue
            if int(row["elapsed_s"]) % 60 < SAMPLE_EVERY:
                print(f"soak: {row['elapsed_s']:>6.0f} s  rss {row['rss_mib']} MiB  fds "
                      f"{row['fds']}  threads {row['threads']}  {row['rps']} req/s  "
                      f"get p99 {row['get_p99_ms']} ms  failures {row['failures']}", flush=True)

    sampling = asyncio.create_task(sample_loop())
    n = 0
    while True:
        at = sampler.start + first + n * every
        if at + hold + 30 > end:
            break
        await asyncio.sleep(max(0, at - time.time()))
        await faults.run(Faults.ORDER[n % len(Faults.ORDER)])
        n += 1
    await asyncio.sleep(max(0, end - time.time()))
    for why in await load.stop():
        faults.done.append(Fault("client", time.time(), time.time(),
                                 problems=[f"a client of the soak died: {why}"]))
    sampling.cancel()
    await asyncio.sleep(2)  # the gateway counts a request just after its answer
    await asyncio.to_thread(sampler.sample)
    await asyncio.to_thread(sampler.scrape)
    return rec, sampler, faults


def setup(world):
    world.make_files()
    world.start_redis()
    world.start_pebble()
    world.start_replica("a")
    world.start_replica("b")
    world.start_signon()
    status, out = world.check()
    if status != 0:
        raise RuntimeError(f"gateway check failed:\n{out}")
    world.start_gateway()
    wait_until("the gateway's metrics listener", lambda: "gateway_build_info" in world.metrics_text(), 30)
    # The ACME certificate: ordered from Pebble at start.
    wait_until("the ACME certificate", lambda: world.metrics_text().count(
        'gateway_acme_orders_total{result="issued"} 1') == 1, 60, every=0.5)
    world.start_prometheus()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    world = World(args.out, args.gateway, args.python)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = 1
    try:
        rec, sampler, faults = asyncio.run(soak(world, args.minutes))
        status = report.verdict(world, rec, sampler, faults, args.minutes)
    finally:
        world.stop_all()
    sys.exit(status)


if __name__ == "__main__":
    main()
