"""The soak's faults, one every few minutes in rotation, and the flaky upstream one of
them needs. Each fault checks what the gateway must do about it and returns the problems
it saw (none, hopefully); report.py explains request failures by the faults' windows.
"""
import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from world import MAX_CONNECTIONS, HERE


@dataclass
class Fault:
    name: str
    t0: float
    t1: float = 0.0
    notes: dict = field(default_factory=dict)
    problems: list = field(default_factory=list)


class Flaky:
    """An upstream on the soak's event loop that answers well, answers garbage, or holds
    its response head past the route's read_timeout (2 s), as `mode` says."""

    def __init__(self):
        self.mode = "ok"
        self.server = None

    async def start(self, port):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", port)
        return port

    async def serve(self, reader, writer):
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if self.mode == "garbage":
                    writer.write(b"\x16\x03\x01 this is no HTTP \xff\xfe\r\n\r\n")
                    await writer.drain()
                    break
                if self.mode == "hold":
                    await asyncio.sleep(5)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                             b"Content-Type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                asyncio.CancelledError):
            pass
        finally:
            writer.close()


class Faults:
    ORDER = ["sighup_routes", "replica_kill", "log_rotate", "binary_upgrade",
             "redis_restart", "reload_broken", "pebble_stop", "cert_garbage",
             "upstream_bad", "fd_pressure", "log_fs_full"]

    def __init__(self, world, rec, sampler, flaky, hold):
        self.w, self.rec, self.sampler, self.flaky = world, rec, sampler, flaky
        self.hold = hold  # how long a lasting fault lasts (Pebble down, fds held...)
        self.done = []
        self.victim = "b"
        self.rotations = 0
        self.expect = {"reload_success": 0, "reload_failure": 0}

    async def run(self, name):
        f = Fault(name, time.time())
        self.sampler.fault = name
        print(f"soak: {time.strftime('%H:%M:%S')} fault {name}", flush=True)
        try:
            await getattr(self, name)(f)
        except Exception as e:  # noqa: BLE001 - a fault that breaks is a problem to report
            f.problems.append(f"the fault itself failed: {type(e).__name__}: {e}")
        f.t1 = time.time()
        self.sampler.fault = ""
        self.done.append(f)
        for p in f.problems:
            print(f"soak:   problem: {p}", flush=True)
        return f

    # ---- configuration ---------------------------------------------------------------

    async def sighup_routes(self, f):
        """SIGHUP with a changed route set: extra.soak.test comes and goes."""
        w = self.w
        w.extra_route = not w.extra_route
        w.write_routes()
        w.serving().send(signal.SIGHUP)
        self.expect["reload_success"] += 1
        want = 200 if w.extra_route else 404
        f.notes["extra_route"] = w.extra_route
        got = await self.poll_status("extra", want, 10)
        if got != want:
            f.problems.append(f"extra.soak.test answered {got}, not {want}, 10 s after SIGHUP")

    async def reload_broken(self, f):
        """POST /-/reload with a broken file: 400, the old configuration stays."""
        w = self.w
        good = w.routes_yaml(w.extra_route)
        w.write_routes(good + "  - host: broken.soak.test\n    upstream: 127.0.0.1:notaport\n"
                              "    max_body: lots\n")
        status, body = await asyncio.to_thread(w.post_reload)
        self.expect["reload_failure"] += 1
        f.notes["answer"] = f"{status} {body.strip()[:200]}"
        if status != 400 or "routes.yaml:" not in body:
            f.problems.append(f"/-/reload of a broken file answered {status}: {body[:200]}")
        if await self.poll_status("app", 200, 5) != 200:
            f.problems.append("app.soak.test stopped answering after a broken reload")
        w.write_routes(good)
        status, body = await asyncio.to_thread(w.post_reload)
        self.expect["reload_success"] += 1
        if status != 200:
            f.problems.append(f"/-/reload of the fixed file answered {status}: {body[:200]}")

    async def cert_garbage(self, f):
        """The default certificate's file replaced with garbage, then fixed: the reload of
        the garbage fails (the old certificate stays), the fix reloads."""
        w = self.w
        good = w.cert.read_bytes()
        before = self.sampler.counter("gateway_config_reloads_total", result="success")
        failures = self.sampler.counter("gateway_config_reloads_total", result="failure")
        replace(w.cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        await asyncio.sleep(max(12, self.hold / 2))
        self.expect["reload_failure"] += 1
        await asyncio.to_thread(self.sampler.scrape)
        now = self.sampler.counter("gateway_config_reloads_total", result="failure")
        gauge = self.sampler.gauge("gateway_config_last_reload_successful")
        if now != failures + 1 or gauge != 0:
            f.problems.append(f"with garbage on disk: failures {failures:.0f} -> {now:.0f}, "
                              f"last_reload_successful {gauge}")
        replace(w.cert, good)
        self.expect["reload_success"] += 1
        deadline = time.time() + 20
        while time.time() < deadline:
            await asyncio.sleep(1)
            await asyncio.to_thread(self.sampler.scrape)
            if self.sampler.counter("gateway_config_reloads_total", result="success") > before:
                return
        f.problems.append("no successful reload within 20 s of the certificate's fix")

    # ---- processes -------------------------------------------------------------------

    async def replica_kill(self, f):
        """SIGKILL of one replica, restarted 10 s later."""
        w = self.w
        self.victim = "a" if self.victim == "b" else "b"
        f.notes["replica"] = self.victim
        f.notes["address"] = f"127.0.0.1:{w.ports['replica_' + self.victim]}"
        f.notes["killed_at"] = time.time()
        w.replicas[self.victim].send(signal.SIGKILL)
        await asyncio.sleep(10)
        await asyncio.to_thread(w.start_replica, self.victim)

    async def binary_upgrade(self, f):
        """A new process takes the sockets over (--upgrade, then SIGQUIT to the old one)."""
        w = self.w
        self.rec.pause_counted = True
        try:
            await asyncio.sleep(2)
            old = w.serving()
            new = w.start_gateway(upgrade=True)
            await asyncio.sleep(1)
            # The old process alone listens until SIGQUIT: its last counts are read now.
            await asyncio.to_thread(self.sampler.scrape)
            old.send(signal.SIGQUIT)
            quit_at = time.time()
            f.notes.update(old=old.pid, new=new.pid)
            deadline = time.time() + 20
            while time.time() < deadline and "event=starting" not in read(new.log):
                await asyncio.sleep(0.2)
            if not new.alive():
                f.problems.append(f"the new process exited: {read(new.log)[-2000:]}")
            elif await self.poll_status("app", 200, 10) != 200:
                f.problems.append("nothing answered 10 s after the upgrade")
            # Pingora's old process accepts for 5 s more (no gap for clients): the counted
            # clients stay paused until it has stopped.
            await asyncio.sleep(max(0, quit_at + 8 - time.time()))
            await asyncio.to_thread(self.sampler.scrape)
        finally:
            self.rec.pause_counted = False

    async def redis_restart(self, f):
        """Redis (the limits store) stopped and started again 5 s later."""
        await asyncio.to_thread(self.w.redis.stop, signal.SIGTERM)
        await asyncio.sleep(5)
        await asyncio.to_thread(self.w.start_redis)

    async def pebble_stop(self, f):
        """The ACME server away for a minute (renewals in that minute fail and retry)."""
        await asyncio.to_thread(self.w.pebble.stop, signal.SIGTERM)
        await asyncio.sleep(self.hold)
        await asyncio.to_thread(self.w.start_pebble)

    # ---- the access log ----------------------------------------------------------------

    async def log_rotate(self, f):
        """logrotate's way: rename the file, then SIGUSR1 to every gateway process."""
        w = self.w
        self.rotations += 1
        log = w.log_dir / "access.log"
        moved = w.log_dir / f"access.log.{self.rotations}"
        log.rename(moved)
        for g in w.live_gateways():
            g.send(signal.SIGUSR1)
        deadline = time.time() + 10
        while time.time() < deadline and not (log.exists() and log.stat().st_size > 0):
            await asyncio.sleep(0.2)
        if not log.exists():
            f.problems.append("no new access.log 10 s after SIGUSR1")
        await asyncio.sleep(3)
        f.notes["rotated_lines"] = await asyncio.to_thread(count_lines, moved)

    async def log_fs_full(self, f):
        """The access log's file system full for a while: the gateway serves on and counts
        the lines it could not write."""
        w = self.w
        if not w.tmpfs:
            f.notes["skipped"] = "not root: no tmpfs of its own for the access log"
            return
        filler = w.log_dir / "filler"
        logged = lambda what: sum(read(g.log).count(what) for g in w.gateways)  # noqa: E731
        failed, recovered = logged("event=access_log_write_failed"), logged("event=access_log_write_recovered")
        await asyncio.to_thread(self.sampler.scrape)
        lost = self.sampler.counter("gateway_access_log_unwritten_total")
        try:
            await asyncio.to_thread(fill, filler)
            f.notes["filled_at"] = time.time()
            await asyncio.sleep(self.hold)
        finally:
            filler.unlink(missing_ok=True)
        size = (w.log_dir / "access.log").stat().st_size
        deadline = time.time() + 10
        while time.time() < deadline and (w.log_dir / "access.log").stat().st_size <= size:
            await asyncio.sleep(0.2)
        if (w.log_dir / "access.log").stat().st_size <= size:
            f.problems.append("the access log did not grow within 10 s of the space coming back")
        await asyncio.to_thread(self.sampler.scrape)
        f.notes["unwritten"] = self.sampler.counter("gateway_access_log_unwritten_total") - lost
        writers = len(w.live_gateways())
        f.notes["failed_logged"] = logged("event=access_log_write_failed") - failed
        f.notes["recovered_logged"] = logged("event=access_log_write_recovered") - recovered
        if f.notes["unwritten"] <= 0:
            f.problems.append("no line counted as unwritten while the disk was full")
        if not 1 <= f.notes["failed_logged"] <= writers:
            f.problems.append(f"the write failure logged {f.notes['failed_logged']} times "
                              f"by {writers} processes (once per process expected)")

    # ---- the upstream and the clients ------------------------------------------------

    async def upstream_bad(self, f):
        """The flaky upstream answers garbage, then holds its head past read_timeout."""
        self.flaky.mode = "garbage"
        await asyncio.sleep(self.hold / 2)
        self.flaky.mode = "hold"
        await asyncio.sleep(self.hold / 2)
        self.flaky.mode = "ok"
        await asyncio.sleep(6)  # the last held answers end (504 after 2 s; 5 s hold)

    async def fd_pressure(self, f):
        """Idle keep-alive connections up to near the gateway's connection cap (its
        open-files limit), held, then closed."""
        count = MAX_CONNECTIONS - 150
        f.notes["connections"] = count
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "hold_conns.py"), str(self.w.ports["https"]),
            str(self.w.ca), str(count), str(self.hold), stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        f.notes["held"] = out.decode().strip()
        if proc.returncode != 0:
            f.problems.append(f"hold_conns: {f.notes['held']}")

    async def poll_status(self, host, want, timeout):
        """Polls https://HOST.soak.test/ until it answers `want` (or timeout): the last."""
        import aiohttp
        from load import Loopback
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.w.ca))
        got = None
        deadline = time.time() + timeout
        conn = aiohttp.TCPConnector(ssl=ctx, resolver=Loopback(), force_close=True)
        async with aiohttp.ClientSession(connector=conn,
                                         timeout=aiohttp.ClientTimeout(total=5)) as s:
            while time.time() < deadline:
                try:
                    async with s.get(f"https://{host}.soak.test:{self.w.ports['https']}/") as r:
                        got = r.status
                        await r.read()
                except Exception as e:  # noqa: BLE001
                    got = type(e).__name__
                if got == want:
                    return got
                await asyncio.sleep(0.2)
        return got


def fill(path):
    """Writes zeros to `path` until its file system is full."""
    with open(path, "wb", buffering=0) as out:
        chunk = b"\0" * (1 << 20)
        try:
            while True:
                out.write(chunk)
        except OSError:
            pass


def replace(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.rename(tmp, path)


def read(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
