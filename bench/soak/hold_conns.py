"""The fd fault's client: opens COUNT TLS connections to the gateway (250 per source
address, 127.0.0.3 and up, below max_connections_per_client), sends one keep-alive GET on
each, holds them idle for SECONDS, closes them, and prints how many it held.

    hold_conns.py HTTPS_PORT CA_FILE COUNT SECONDS
"""
import asyncio
import ssl
import sys


async def one(i, port, ctx, sem, held):
    async with sem:
        addr = f"127.0.0.{3 + i // 250}"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=ctx, server_hostname="app.soak.test",
                local_addr=(addr, 0)), 20)
        except (OSError, asyncio.TimeoutError) as e:
            return type(e).__name__
        try:
            writer.write(b"GET /health HTTP/1.1\r\nHost: app.soak.test\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 20)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            writer.close()
            return type(e).__name__
    held.append(writer)
    return None


async def main():
    port, ca, count, seconds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    ctx = ssl.create_default_context(cafile=ca)
    sem, held = asyncio.Semaphore(32), []
    try:
        errors = await asyncio.wait_for(asyncio.gather(
            *[one(i, port, ctx, sem, held) for i in range(count)]), 180)
    except asyncio.TimeoutError:
        errors = ["not all open within 180 s"]
    failed = [e for e in errors if e]
    await asyncio.sleep(seconds)
    for w in held:
        w.close()
    print(f"held {len(held)} of {count}" + (f"; failed: {sorted(set(failed))}" if failed else ""))
    return 0 if not failed else 1


sys.exit(asyncio.run(main()))
