"""The soak's clients: steady, mixed, moderate load (not a throughput test).

Every request and stream is recorded (`Record`): when it started and ended, its class,
whether it succeeded and, if not, why. report.py later explains each failure by a fault
or lists it as unexplained.
"""
import asyncio
import hashlib
import json
import os
import random
import socket
import ssl
import time
from dataclasses import dataclass, field

import contextvars
import itertools

import aiohttp
from aiohttp.abc import AbstractResolver

# The X-Request-Id of the request being made: the gateway keeps it in its access log, so
# report.py can read which replica a failed request was on.
RID = contextvars.ContextVar("rid", default="")
NEXT_RID = itertools.count(1)


def rid(headers=None):
    return {**(headers or {}), "X-Request-Id": RID.get()}

# Keep-alive GET workers and the pace of each (requests per second).
GET_WORKERS, GET_RATE = 6, 6.0
UPLOAD_BYTES = 50 * 1024 * 1024
TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=10)


@dataclass
class Event:
    cls: str  # get, flaky, gen, upload, tls_new, bad_login, sse, ws
    t0: float
    t1: float
    ok: bool
    cause: str = ""  # why it failed ("status 502", "timeout", "cut"...)
    route: str = ""
    replica: str = ""  # the replica a stream was on (from its hello)
    rid: str = ""  # its X-Request-Id


@dataclass
class Record:
    events: list = field(default_factory=list)
    # Set during a binary upgrade: the clients whose requests report.py counts against
    # the metrics (wrong passwords, the queue's bursts) wait until the old process no
    # longer accepts, so that its last scrape holds all its counts.
    pause_counted: bool = False
    stopping: bool = False
    serials: dict = field(default_factory=dict)  # acme certificate serial -> first seen

    def add(self, *args, **kw):
        self.events.append(Event(*args, **kw))


class Loopback(AbstractResolver):
    """Every *.soak.test name is 127.0.0.1."""

    async def resolve(self, host, port=0, family=socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port,
                 "family": socket.AF_INET, "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self):
        pass


class Load:
    def __init__(self, world, rec, minutes):
        self.w, self.rec = world, rec
        self.port = world.ports["https"]
        self.ctx = ssl.create_default_context(cafile=str(world.ca))
        self.minutes = minutes
        self.tasks = []
        self.blob = os.urandom(UPLOAD_BYTES)

    def url(self, host, path):
        return f"https://{host}.soak.test:{self.port}{path}"

    def session(self, local_addr=None, force_close=False, limit=4):
        keep = {"force_close": True} if force_close else {"keepalive_timeout": 30}
        conn = aiohttp.TCPConnector(ssl=self.ctx, resolver=Loopback(), limit=limit,
                                    local_addr=local_addr, **keep)
        return aiohttp.ClientSession(connector=conn, timeout=TIMEOUT)

    def start(self):
        spawn = lambda c: self.tasks.append(asyncio.create_task(c))  # noqa: E731
        for i in range(GET_WORKERS):
            spawn(self.gets(i))
        spawn(self.flaky())
        spawn(self.gen_bursts())
        for i in range(4):
            spawn(self.sse(i))
        for i in range(2):
            spawn(self.ws(i, whole_run=True))
        for i in range(4):
            spawn(self.ws(10 + i, whole_run=False))
        spawn(self.uploads())
        spawn(self.tls_new())
        spawn(self.bad_logins())

    async def stop(self):
        """Ends the load; returns the clients that died of their own error (a bug here)."""
        self.rec.stopping = True
        died = [t.exception() for t in self.tasks if t.done() and not t.cancelled()]
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        return [f"{type(e).__name__}: {e}" for e in died if e]

    async def timed(self, cls, route, coro):
        """Runs one request `coro` (returning None when it succeeded, else a cause)."""
        t0 = time.time()
        RID.set(f"soak-{next(NEXT_RID)}")
        try:
            cause = await coro
        except asyncio.CancelledError:
            raise
        except asyncio.TimeoutError:
            cause = "timeout"
        except aiohttp.ClientError as e:
            cause = f"connection: {type(e).__name__}"
        except (OSError, ssl.SSLError) as e:
            cause = f"connection: {type(e).__name__}"
        self.rec.add(cls, t0, time.time(), cause is None, cause or "", route, rid=RID.get())
        return cause

    # ---- keep-alive GETs ------------------------------------------------------------

    async def gets(self, i):
        targets = [
            ("app", "app", "/", {}),
            ("api", "app", "/api/echo", {"X-API-Key": self.w.key}),
            ("login", "login", "/", {"Authorization": aiohttp.BasicAuth(
                "soak", "soak-password").encode()}),
            ("sso", "sso", "/", {"Authorization": "Bearer soak-sso"}),
        ]
        async with self.session() as s:
            n = i
            while True:
                route, host, path, headers = targets[n % len(targets)]
                n += 1
                await self.timed("get", route, self.get_one(s, host, path, headers, route))
                await asyncio.sleep(random.expovariate(GET_RATE))

    async def get_one(self, s, host, path, headers, route):
        async with s.get(self.url(host, path), headers=rid(headers)) as r:
            body = await r.read()
            if r.status != 200:
                return f"status {r.status}"
            if route == "api":
                got = json.loads(body)
                if got["user"] != ["soak-bot"] or got["leaked"]:
                    return f"api saw user={got['user']} leaked={got['leaked']}"
            elif len(body) != 2048:
                return f"short body {len(body)}: {body[:60]!r} from {r.headers.get('X-Replica')}"
        return None

    async def flaky(self):
        async with self.session() as s:
            while True:
                await self.timed("flaky", "flaky", self.status_of(s, "flaky", "/"))
                await asyncio.sleep(0.5)

    async def status_of(self, s, host, path):
        async with s.get(self.url(host, path), headers=rid()) as r:
            await r.read()
            return None if r.status == 200 else f"status {r.status}"

    # ---- max_concurrent and its queue ------------------------------------------------

    async def gen_bursts(self):
        """Every 30 s, 24 requests of 2 s at once on `gen` (2 per replica, a queue of 16):
        4 run, 16 wait, 4 are refused 503 by design (more while a replica is down)."""
        async with self.session(limit=32) as s:
            while True:
                await asyncio.sleep(30)
                if self.rec.pause_counted:
                    continue
                await asyncio.gather(*[
                    self.timed("gen", "gen", self.gen_one(s)) for _ in range(24)])

    async def gen_one(self, s):
        async with s.get(self.url("app", "/gen/work?ms=2000"), headers=rid()) as r:
            body = await r.read()
            if r.status == 503 and b"busy" in body.lower():
                return "queue_full"
            return None if r.status == 200 else f"status {r.status}"

    # ---- streams ---------------------------------------------------------------------

    async def sse(self, i):
        async with self.session(limit=1) as s:
            await asyncio.sleep(i * 7)
            while True:
                seconds = random.randint(120, 300) if self.minutes > 10 else random.randint(40, 90)
                await self.sse_one(s, seconds)
                await asyncio.sleep(1)

    async def sse_one(self, s, seconds):
        t0, replica, expect = time.time(), "", 0
        timeout = aiohttp.ClientTimeout(total=None, sock_read=20)
        try:
            async with s.get(self.url("app", f"/sse?seconds={seconds}"), timeout=timeout) as r:
                if r.status != 200:
                    self.rec.add("sse", t0, time.time(), False, f"status {r.status}", "app")
                    return
                event = ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                        if event == "hello":
                            replica = data
                        elif event == "end":
                            ok = expect == seconds
                            cause = "" if ok else f"missing events ({expect} of {seconds})"
                            self.rec.add("sse", t0, time.time(), ok, cause, "app", replica)
                            return
                        elif int(data) != expect:
                            self.rec.add("sse", t0, time.time(), False,
                                         f"event {data} where {expect} was due", "app", replica)
                            return
                        else:
                            expect += 1
                        event = ""
                cause = "cut" if replica else f"no hello: {r.headers.get('Content-Type')}"
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            cause = f"cut: {type(e).__name__}"
        self.rec.add("sse", t0, time.time(), False, cause, "app", replica)

    async def ws(self, i, whole_run):
        async with self.session(limit=1) as s:
            await asyncio.sleep(i % 10 * 5)
            while True:
                await self.ws_one(s, None if whole_run else 120)
                await asyncio.sleep(1)

    async def ws_one(self, s, lifetime):
        t0, replica = time.time(), ""
        try:
            async with s.ws_connect(self.url("app", "/ws"), heartbeat=None,
                                    receive_timeout=20) as ws:
                hello = await ws.receive_str()
                replica = hello.split(" ", 1)[1]
                n = 0
                while lifetime is None or time.time() - t0 < lifetime:
                    await asyncio.sleep(3)
                    n += 1
                    await ws.send_str(f"ping {n}")
                    got = await ws.receive_str()
                    if got != f"ping {n}":
                        self.rec.add("ws", t0, time.time(), False, f"echo {got!r}", "app", replica)
                        return
                self.rec.add("ws", t0, time.time(), True, "", "app", replica)
                return
        except asyncio.CancelledError:
            if self.rec.stopping and replica:
                self.rec.add("ws", t0, time.time(), True, "", "app", replica)
            raise
        except aiohttp.WSServerHandshakeError as e:
            self.rec.add("ws", t0, time.time(), False, f"handshake: {e.status}", "app", replica)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, TypeError, IndexError) as e:
            self.rec.add("ws", t0, time.time(), False, f"cut: {type(e).__name__}", "app", replica)

    # ---- uploads ---------------------------------------------------------------------

    async def uploads(self):
        async with self.session(limit=1) as s:
            await asyncio.sleep(20)
            n = 0
            while True:
                n += 1
                await self.timed("upload", "app", self.upload_one(s, n))
                await asyncio.sleep(60)

    async def upload_one(self, s, n):
        head = n.to_bytes(8, "big") + os.urandom(24)
        digest = await asyncio.to_thread(lambda: hashlib.sha256(head + self.blob).hexdigest())
        size = len(head) + len(self.blob)
        headers = rid({"X-Content-Sha256": digest, "X-Content-Bytes": str(size)})
        chunked = n % 2 == 0

        async def body():
            yield head
            for off in range(0, len(self.blob), 256 * 1024):
                yield self.blob[off:off + 256 * 1024]

        if not chunked:
            headers["Content-Length"] = str(size)
        timeout = aiohttp.ClientTimeout(total=300)
        async with s.post(self.url("app", "/upload"), data=body(), headers=headers,
                          timeout=timeout) as r:
            text = await r.text()
            if r.status == 422:
                return f"corrupted: {text}"
            return None if r.status == 200 else f"status {r.status}"

    # ---- new TLS connections ---------------------------------------------------------

    async def tls_new(self):
        """A new connection every second, alternating between the default certificate
        (app) and the ACME one (acme), which must verify against Pebble's roots."""
        n = 0
        while True:
            n += 1
            host = "acme" if n % 2 else "app"
            await self.timed("tls_new", host, self.tls_one(host))
            await asyncio.sleep(1)

    async def tls_one(self, host):
        if host == "acme":
            ctx = ssl.create_default_context(cafile=str(self.w.acme_roots))
        else:
            ctx = self.ctx
        name = f"{host}.soak.test"
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", self.port, ssl=ctx, server_hostname=name), 10)
        try:
            cert = writer.get_extra_info("peercert")
            if host == "acme" and cert:
                self.rec.serials.setdefault(cert["serialNumber"], (time.time(), cert["notAfter"]))
            writer.write(f"GET / HTTP/1.1\r\nHost: {name}\r\nX-Request-Id: {RID.get()}\r\n"
                         "Connection: close\r\n\r\n".encode())
            status = await asyncio.wait_for(reader.readline(), 10)
            await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
        parts = status.split()
        return None if len(parts) > 1 and parts[1] == b"200" else f"status {status[:40]!r}"

    # ---- wrong passwords ---------------------------------------------------------------

    async def bad_logins(self):
        """A client (127.0.0.2) with a wrong password every 8 s, on a new connection each
        time; fewer than `auth_failures` allows, so each gets 401, never 429."""
        bad = {"Authorization": aiohttp.BasicAuth("soak", "wrong").encode()}
        async with self.session(local_addr=("127.0.0.2", 0), force_close=True) as s:
            while True:
                await asyncio.sleep(8)
                if self.rec.pause_counted:
                    continue

                async def one():
                    async with s.get(self.url("login", "/"), headers=rid(bad)) as r:
                        await r.read()
                        return None if r.status == 401 else f"status {r.status}"

                await self.timed("bad_login", "login", one())
