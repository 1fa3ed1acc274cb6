"""End to end: real Gradio and Streamlit apps behind the real gateway, checked with HTTP
clients (HTTP/1.1 and HTTP/2) and headless Chromium. Run by tests/e2e/run.

Every test runs against two stacks: "host", each app on its own host name (voice.test,
image.test), and "path", both apps on one host name under /voice/ and /image/ (each
started with its documented sub-path setting: Gradio's root_path, Streamlit's
server.baseUrlPath). In both the Gradio app runs as two replicas, "a" and "b", behind
the one voice route (a pool: least_conn, health checks, sticky cookie), so every Gradio
test goes through the pool; each replica has its own temp dir and request log.

Everything stays on loopback: the apps and the gateway listen on 127.0.0.1, the
clients map the test host names to 127.0.0.1 themselves (no /etc/hosts), Gradio
analytics and Streamlit usage stats are off, Chromium runs without background
networking.
"""

import collections
import hashlib
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpcore
import httpx
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GATEWAY = Path(os.environ.get("GATEWAY_BIN", ROOT / "target/debug/gateway"))
VOICE, IMAGE, AI = "voice.test", "image.test", "ai.test"
# docs/img/ when regenerating the screenshots (E2E_SCREENSHOTS=1), else a scratch dir.
SHOTS = ROOT / "docs/img" if os.environ.get("E2E_SCREENSHOTS") == "1" else None


def replica_series(lines, name, replicas):
    """{replica: value} of gauge `name` for the voice route, from Prometheus text lines."""
    by_addr = {addr: r for r, addr in replicas.items()}
    values = {}
    for line in lines:
        m = re.fullmatch(r"(\w+)\{([^}]*)\}\s+(\S+)", line.strip())
        if not m or m[1] != name:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m[2]))
        if labels.get("route") == "voice" and labels.get("upstream") in by_addr:
            values[by_addr[labels["upstream"]]] = int(float(m[3]))
    return values


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


REPLICAS = ("a", "b")


class Stack:
    """The apps and the gateway, on free loopback ports: the Gradio app as two replicas
    behind one route, Streamlit once. `paths`: both apps on one host, under /voice/ and
    /image/; otherwise each on its own host."""

    def __init__(self, work: Path, paths: bool):
        self.work = work
        self.paths = paths
        self.procs = []
        self.https = free_port()
        self.metrics = free_port()
        # Replica name -> its address, as in routes.yaml and the metrics' upstream label.
        self.replicas = {r: f"127.0.0.1:{free_port()}" for r in REPLICAS}
        streamlit_port = free_port()
        env = dict(os.environ)
        env.update(
            GRADIO_ANALYTICS_ENABLED="False",
            STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
            HF_HUB_OFFLINE="1",
        )
        # The documented sub-path settings (docs/operations.md).
        gradio_env = dict(env)
        streamlit_extra = []
        if paths:
            gradio_env["GRADIO_ROOT_PATH"] = "/voice"
            streamlit_extra = ["--server.baseUrlPath", "image"]
        # The replicas start together. Each has its own temp dir (an upload or a file
        # made on one is not found on the other, as on two machines) and request log.
        self.gradios = {
            r: self.spawn(
                [sys.executable, str(HERE / "apps/gradio_app.py")],
                dict(
                    gradio_env,
                    PORT=addr.rsplit(":", 1)[1],
                    REPLICA=r,
                    REQUEST_LOG=str(work / f"requests-{r}.log"),
                    GRADIO_TEMP_DIR=str(work / f"gradio-tmp-{r}"),
                ),
                f"gradio-{r}.log",
            )
            for r, addr in self.replicas.items()
        }
        self.streamlit = self.spawn(
            [
                sys.executable, "-m", "streamlit", "run", str(HERE / "apps/streamlit_app.py"),
                "--server.address", "127.0.0.1", "--server.port", str(streamlit_port),
                "--server.headless", "true", "--browser.gatherUsageStats", "false",
                "--server.maxUploadSize", "200", *streamlit_extra,
            ],
            env,
            "streamlit.log",
        )
        if paths:
            # Gradio's root_path works with the prefix stripped or not; stripped here, so
            # that the gateway's Location and cookie rewriting is exercised too.
            # Streamlit's baseUrlPath needs the path as received.
            voice = f"- host: {AI}\n    path: /voice/\n    strip_prefix: true"
            image = f"- host: {AI}\n    path: /image/"
        else:
            voice, image = f"- host: {VOICE}", f"- host: {IMAGE}"
        self.config = work / "routes.yaml"
        self.config.write_text(
            f"""listen:
  https: "127.0.0.1:{self.https}"
  metrics: "127.0.0.1:{self.metrics}"
access_log: {work / "access.log"}
routes:
  {voice}
    name: voice
    upstream: [{", ".join(self.replicas.values())}]   # least_conn, health, sticky: the defaults
    max_body: 100M          # pairs with Gradio's max_file_size="100mb"
    rate_limit: {{ rate: 50/s, burst: 300 }}   # two browsers from one address (pool test)
  {image}
    name: image
    upstream: 127.0.0.1:{streamlit_port}
    max_body: 1M            # well under Streamlit's server.maxUploadSize (200 MB)
    rate_limit: {{ rate: 50/s, burst: 300 }}
"""
        )
        # The gateway once the apps listen: its first health checks (at start, then every
        # 5 s) would otherwise eject a replica still importing Gradio.
        for r, addr in self.replicas.items():
            wait_port(int(addr.rsplit(":", 1)[1]), self.gradios[r], f"gradio replica {r}")
        wait_port(streamlit_port, self.streamlit, "streamlit")
        self.gateway = self.spawn(
            [str(GATEWAY), "run", "-c", str(self.config)],
            dict(env, RUST_LOG="info", STATE_DIRECTORY=str(work / "state")),
            "gateway.log",
        )
        wait_port(self.https, self.gateway, "gateway", 30)
        wait_port(self.metrics, self.gateway, "gateway metrics", 30)
        self.ca = work / "state/selfsigned.pem"
        deadline = time.time() + 15
        while self.replicas_up() != {r: 1 for r in REPLICAS}:
            if time.time() > deadline:
                raise RuntimeError(f"replicas not up: {self.replicas_up()}")
            time.sleep(0.2)

    def spawn(self, args, env, log):
        out = open(self.work / log, "wb")
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.work)
        self.procs.append(proc)
        return proc

    def replica_series(self, name):
        """A gateway_upstream_* gauge of the voice route per replica: {"a": 1, "b": 1}."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics}/metrics").text
        return replica_series(text.splitlines(), name, self.replicas)

    def replicas_up(self):
        return self.replica_series("gateway_upstream_up")

    def replica_requests(self, replica, user_agent=None):
        """The requests the gateway forwarded to `replica` (with `user_agent`), from the
        replica's own log (apps/gradio_app.py): not the health checks, nor Gradio's
        start-up requests to itself."""
        log = self.work / f"requests-{replica}.log"
        lines = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
        return [
            q
            for q in lines
            if q["x_forwarded_proto"] == "https" and user_agent in (None, q["user_agent"])
        ]

    def host(self, app):
        """The host name the browser and clients use for `app` ("voice" or "image")."""
        if self.paths:
            return AI
        return VOICE if app == "voice" else IMAGE

    def origin(self, app, port=None):
        """Where `app` is served, without a trailing slash."""
        port = f":{port or self.https}" if port != 443 else ""
        base = f"https://{self.host(app)}{port}"
        return f"{base}/{app}" if self.paths else base

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture(scope="module", params=["host", "path"])
def stack(request):
    with tempfile.TemporaryDirectory() as work:
        s = Stack(Path(work), paths=request.param == "path")
        try:
            yield s
        finally:
            s.stop()


class Loopback(httpcore.SyncBackend):
    """Connects every host name to 127.0.0.1: the URL (and so SNI, Host and
    :authority) keeps the public name, as for a real client."""

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        return super().connect_tcp("127.0.0.1", port, timeout, local_address, socket_options)


def client(stack, http2=False):
    ctx = ssl.create_default_context(cafile=str(stack.ca))
    if http2:
        ctx.set_alpn_protocols(["h2"])
    transport = httpx.HTTPTransport(verify=ctx, http2=http2)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=ctx, http1=not http2, http2=http2, network_backend=Loopback()
    )
    return httpx.Client(transport=transport, timeout=120)


def gradio_call(c, origin, api, data):
    """Gradio's REST API: POST starts the job, GET streams its events (SSE).
    Returns [(seconds since start, event, data)]."""
    started = time.time()
    r = c.post(f"{origin}/gradio_api/call/{api}", json={"data": data})
    r.raise_for_status()
    event_id = r.json()["event_id"]
    events, event = [], None
    with c.stream("GET", f"{origin}/gradio_api/call/{api}/{event_id}") as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((time.time() - started, event, json.loads(line[5:])))
    return resp, events


def test_gradio_page_and_urls_point_at_the_public_origin(stack):
    origin = stack.origin("voice")
    with client(stack) as c:
        page = c.get(origin + "/")
        assert page.status_code == 200 and "gradio" in page.text.lower()
        config = c.get(origin + "/config").json()
        assert config["root"].rstrip("/") == origin, config["root"]
        _, events = gradio_call(c, origin, "make_file", ["hello"])
        result = events[-1][2][0]
        assert result["url"].startswith(origin + "/"), result["url"]
        download = c.get(result["url"])
        assert download.status_code == 200 and download.text == "hello"
        if stack.paths:
            # The prefix without its slash is sent to the prefix (relative URLs resolve).
            moved = c.get(origin + "?x=1")
            assert moved.status_code == 301 and moved.headers["location"] == "/voice/?x=1"


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_gradio_stream_arrives_incrementally(stack, http2):
    with client(stack, http2) as c:
        resp, events = gradio_call(c, stack.origin("voice"), "generate", [8])
        assert resp.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
    generating = [t for t, event, _ in events if event == "generating"]
    done = [t for t, event, _ in events if event == "complete"]
    assert len(generating) >= 6 and done, events
    # Eight tokens 0.4 s apart (2.8 s from first to last): the first must arrive well
    # before the last. A buffering proxy delivers them together; half the spread is left
    # for a busy machine to deliver the first one late.
    assert done[0] - generating[0] > 1.4, events
    assert events[-1][2][0].strip().endswith("token7")


def test_gradio_50mb_upload_arrives_intact(stack, tmp_path):
    blob = tmp_path / "audio.bin"
    data = os.urandom(1 << 20) * 50
    blob.write_bytes(data)
    expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    with client(stack) as c, open(blob, "rb") as f:
        r = c.post(stack.origin("voice") + "/gradio_api/upload", files={"files": ("audio.bin", f)})
        assert r.status_code == 200, r.text
        path = r.json()[0]
        file_data = {"path": path, "meta": {"_type": "gradio.FileData"}}
        _, events = gradio_call(c, stack.origin("voice"), "measure", [file_data])
    assert events[-1][1] == "complete", events
    assert events[-1][2][0] == expected


def browser(stack, scenario):
    """Runs browser.mjs SCENARIO BASE SHOT in headless Chromium; returns its JSON report.
    Screenshots are named by scenario, with "-subpath" for the path stack."""
    shots = SHOTS or stack.work
    shot = shots / (scenario + ("-subpath" if stack.paths else "") + ".png")
    out = subprocess.run(
        ["node", str(HERE / "browser.mjs"), scenario, stack.origin(scenario_app(scenario)), str(shot)],
        capture_output=True,
        text=True,
        timeout=180,
        env=dict(
            os.environ,
            HOST_RULES=", ".join(f"MAP {h} 127.0.0.1" for h in (VOICE, IMAGE, AI)),
            METRICS=f"http://127.0.0.1:{stack.metrics}/metrics",
        ),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(scenario, report)
    return report


def scenario_app(scenario):
    return "voice" if scenario.startswith("gradio") else "image"


def outside(stack, app, urls):
    """The requests of a page that left its app's prefix (all of them for the host stack
    are inside: the prefix is the whole host)."""
    base = stack.origin(app) + "/"
    host_root = f"https://{stack.host(app)}:{stack.https}/"
    return [u for u in urls if u.startswith(host_root) and not u.startswith(base)]


def test_streamlit_in_chromium_counter_upload_and_413(stack):
    report = browser(stack, "streamlit")
    assert report["counts"] == ["count: 1", "count: 2"], report
    assert report["uploaded"].startswith("received 4096 bytes"), report
    assert "413" in report["too_large"], report
    assert report["after"] == "count: 3", report
    streams = [u for u in report["websockets"] if "/_stcore/stream" in u]
    ws_base = stack.origin("image").replace("https://", "wss://")
    assert streams and all(u.startswith(ws_base + "/_stcore/stream") for u in streams), report
    assert outside(stack, "image", report["requests"]) == [], report["requests"]
    log = (stack.work / "access.log").read_text()
    refused = [json.loads(l) for l in log.splitlines() if '"reason":"body_too_large"' in l]
    assert refused and refused[0]["route"] == "image", log[-2000:]


def test_gradio_in_chromium_shows_output_growing_and_uploads(stack):
    report = browser(stack, "gradio")
    values = report["values"]
    assert values[-1].strip().endswith("token7"), values
    partial = [v for v in values if v and not v.strip().endswith("token7")]
    assert partial, f"only the final output was ever seen: {values}"
    assert report["measured"] == f"4096 {hashlib.sha256(bytes([7]) * 4096).hexdigest()}", report
    # Every asset and API call under the prefix; Gradio 6 links /manifest.json from the
    # host root.
    strays = [u for u in outside(stack, "voice", report["requests"]) if "/manifest.json" not in u]
    assert strays == [], strays


def test_gradio_pool_in_chromium_keeps_each_browser_on_one_replica(stack):
    """Two Chromium sessions on the two-replica voice route (browser.mjs gradio-pool).
    The first generates (streamed to its end), uploads and measures; while its output
    streams, the second, without cookies, opens the app and then generates too. Each
    session's requests all reach one replica, the one its cookie names."""
    report = browser(stack, "gradio-pool")
    sessions = report["sessions"]
    placed = []
    for s in sessions:
        # The streamed output, every value of which names the replica that made it.
        values = [v.strip() for v in s["values"] if v.strip()]
        assert values and values[-1].endswith("token7"), s["values"]
        assert [v for v in values if not v.endswith("token7")], f"no partial value: {values}"
        names = {m[1] if (m := re.match(r"\[(\w+)\] token0\b", v)) else v for v in values}
        assert len(names) == 1 and names <= set(REPLICAS), values
        placed.append(names.pop())
    assert sessions[0]["measured"] == f"4096 {hashlib.sha256(bytes([7]) * 4096).hexdigest()}"

    # While the first session's output streamed (from before the second browser's first
    # request until after its page had arrived, with two tokens at least still to come)
    # its replica had a request in flight and the other none, so least_conn put the
    # second browser on the other replica.
    before = report["metrics_before_second"]
    in_flight = replica_series(before, "gateway_upstream_in_flight", stack.replicas)
    up = replica_series(before, "gateway_upstream_up", stack.replicas)
    first, other = placed[0], next(r for r in REPLICAS if r != placed[0])
    assert up == {"a": 1, "b": 1} and in_flight[first] >= 1 and in_flight[other] == 0, before
    assert "token6" not in report["first_after_second"], report["first_after_second"]
    assert placed[1] == other, (placed, before)

    # Every request of a session reached its replica and none the other (the replicas'
    # own logs), and every one the gateway forwarded and the app answered is among them.
    access = [json.loads(l) for l in (stack.work / "access.log").read_text().splitlines()]
    for s, replica in zip(sessions, placed):
        ua = s["user_agent"]
        seen = {r: [(q["method"], q["path"]) for q in stack.replica_requests(r, ua)] for r in REPLICAS}
        assert seen[replica] and not any(seen[r] for r in REPLICAS if r != replica), seen
        mine = [e for e in access if e["user_agent"] == ua and e["route"] == "voice"]
        assert mine and all(e["reason"] is None and e["upstream_error"] is None for e in mine)
        cut = len("/voice") if stack.paths else 0
        answered = collections.Counter(
            (e["method"], e["path"][cut:]) for e in mine if e["upstream_header_ms"] is not None
        )
        missing = answered - collections.Counter(seen[replica])
        assert answered and not missing, (missing, seen[replica])

    # The sticky cookie: set once per session, on its first response; the two sessions
    # got the route's cookie with two values (two replicas).
    cookies = []
    for s in sessions:
        jar = [c for c in s["cookies"] if c["name"].startswith("gw_")]
        assert len(jar) == 1, s["cookies"]
        c = jar[0]
        assert re.fullmatch(r"gw_[0-9a-f]{10}", c["name"]), c
        assert re.fullmatch(r"[0-9a-f]{16}", c["value"]), c
        assert c["path"] == "/" and c["httpOnly"] and c["secure"] and c["sameSite"] == "Lax", c
        set_cookies = [x for x in s["set_cookies"] if x["cookie"].startswith("gw_")]
        expected = f"{c['name']}={c['value']}; Path=/; HttpOnly; Secure; SameSite=Lax"
        assert [x["cookie"] for x in set_cookies] == [expected], set_cookies
        assert set_cookies[0]["url"] == stack.origin("voice") + "/", set_cookies
        cookies.append((c["name"], c["value"]))
    assert cookies[0][0] == cookies[1][0] and cookies[0][1] != cookies[1][1], cookies

    # Both replicas healthy, and nothing left in flight once the browsers are gone.
    after = report["metrics_after"]
    assert replica_series(after, "gateway_upstream_up", stack.replicas) == {"a": 1, "b": 1}, after
    idle = {"a": 0, "b": 0}
    deadline = time.time() + 10
    while stack.replica_series("gateway_upstream_in_flight") != idle and time.time() < deadline:
        time.sleep(0.2)
    assert stack.replica_series("gateway_upstream_in_flight") == idle
    assert stack.replicas_up() == {"a": 1, "b": 1}


def test_gradio_pool_pins_an_api_client_by_its_address(stack):
    """A client without cookies or Fetch Metadata (httpx, like gradio_client) gets no
    cookie and stays on one replica by its address, over new connections and both HTTP
    versions: the REST API's POST and its event stream meet on one replica."""
    replicas = set()
    for http2 in (False, True):
        with client(stack, http2) as c:
            resp, events = gradio_call(c, stack.origin("voice"), "generate", [2])
            assert "set-cookie" not in resp.headers, resp.headers
            text = events[-1][2][0]
            assert events[-1][1] == "complete" and text.strip().endswith("token1"), events
            replicas.add(text[1:].split("]")[0])
    assert len(replicas) == 1 and replicas <= set(REPLICAS), replicas
    agents = {
        r: {q["user_agent"] for q in stack.replica_requests(r) if "httpx" in q["user_agent"]}
        for r in REPLICAS
    }
    assert agents[replicas.pop()] and sum(bool(a) for a in agents.values()) == 1, agents


def test_gradio_urls_on_port_443(stack):
    """On the standard port the public origin has no port: Gradio must not add one."""
    if os.geteuid() != 0:
        pytest.skip("binding 127.0.0.1:443 needs root (CI runs as root)")
    text = stack.config.read_text()
    text = text.replace(f'https: "127.0.0.1:{stack.https}"', 'https: "127.0.0.1:443"')
    text = text.replace(f'metrics: "127.0.0.1:{stack.metrics}"', f'metrics: "127.0.0.1:{free_port()}"')
    config = stack.work / "routes-443.yaml"
    config.write_text(text.replace("access.log", "access-443.log"))
    env = dict(os.environ, STATE_DIRECTORY=str(stack.work / "state"))  # the same certificate
    gw = stack.spawn([str(GATEWAY), "run", "-c", str(config)], env, "gateway-443.log")
    try:
        wait_port(443, gw, "gateway on 443", 30)
        origin = stack.origin("voice", port=443)
        with client(stack) as c:
            assert c.get(origin + "/config").json()["root"].rstrip("/") == origin
            _, events = gradio_call(c, origin, "make_file", ["on 443"])
            url = events[-1][2][0]["url"]
            assert url.startswith(origin + "/"), url
            assert c.get(url).text == "on 443"
    finally:
        gw.terminate()
        gw.wait(10)


class OnDemandStack:
    """The Gradio app as an app the gateway runs itself, started by the first request
    and stopped after 20 s unused (docs/on-demand.md): nothing runs it before."""

    paths = False

    def __init__(self, work: Path):
        self.work = work
        self.procs = []
        self.https = free_port()
        self.metrics = free_port()
        self.port = free_port()
        self.config = work / "routes.yaml"
        self.config.write_text(
            f"""listen:
  https: "127.0.0.1:{self.https}"
  metrics: "127.0.0.1:{self.metrics}"
routes:
  - host: {VOICE}
    name: voice
    upstream: 127.0.0.1:{self.port}
    app: voice
apps:
  voice:
    run: [{sys.executable}, {HERE / "apps/gradio_app.py"}]
    env: {{ PORT: "{self.port}", GRADIO_ANALYTICS_ENABLED: "False", HF_HUB_OFFLINE: "1", GRADIO_TEMP_DIR: "{work / "gradio-tmp"}" }}
    workdir: {work}
    log: {work / "voice.log"}
    start_timeout: 3m
    idle_stop: 20s
"""
        )
        out = open(work / "gateway.log", "wb")
        self.gateway = subprocess.Popen(
            [str(GATEWAY), "run", "-c", str(self.config)],
            env=dict(os.environ, RUST_LOG="info", STATE_DIRECTORY=str(work / "state")),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        self.procs.append(self.gateway)
        wait_port(self.https, self.gateway, "gateway", 30)
        wait_port(self.metrics, self.gateway, "gateway metrics", 30)
        self.ca = work / "state/selfsigned.pem"

    def host(self, app):
        return VOICE

    def origin(self, app, port=None):
        return f"https://{VOICE}:{self.https}"

    def app(self):
        """The app as GET /-/apps reports it."""
        apps = httpx.get(f"http://127.0.0.1:{self.metrics}/-/apps").json()["apps"]
        return next(a for a in apps if a["name"] == "voice")

    def stop(self):
        # SIGTERM: the gateway stops the app it runs, then exits.
        self.gateway.terminate()
        try:
            self.gateway.wait(30)
        except subprocess.TimeoutExpired:
            self.gateway.kill()


def running(pid):
    """Whether `pid` runs (not a zombie left for init to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_gradio_on_demand_waiting_page_then_app_then_idle_stop(tmp_path):
    stack = OnDemandStack(tmp_path)
    try:
        assert stack.app()["state"] == "stopped"
        report = browser(stack, "gradio-ondemand")
        assert report["first_status"] == 503, report
        assert report["first_heading"].startswith("voice is"), report
        assert report["first_ms"] < 1000, report
        assert report["values"][-1].strip().endswith("token7"), report
        app = stack.app()
        assert app["state"] == "ready", app
        pid = app["pid"]
        assert running(pid)
        # Unused for idle_stop (20 s): stopped, its process gone.
        deadline = time.time() + 60
        while stack.app()["state"] != "stopped":
            assert time.time() < deadline, stack.app()
            time.sleep(0.5)
        assert not running(pid)
        # The next visit starts it again: the waiting page, then the app.
        c = client(stack)
        page = c.get(stack.origin("voice") + "/", headers={"Accept": "text/html", "Sec-Fetch-Mode": "navigate"})
        assert page.status_code == 503 and "voice is" in page.text, page.text[:500]
        deadline = time.time() + 180
        while True:
            page = c.get(stack.origin("voice") + "/", headers={"Accept": "text/html"})
            if page.status_code == 200:
                break
            assert page.status_code == 503 and time.time() < deadline, page.status_code
            time.sleep(1)
        assert stack.app()["pid"] != pid
    finally:
        stack.stop()
    log = (tmp_path / "gateway.log").read_text()
    assert "event=app_stop app=voice reason=idle" in log, log[-3000:]


def test_gradio_client_calls_through_with_its_api_key(tmp_path, monkeypatch):
    """gradio_client, as a script uses it, against the real Gradio app on a route that
    accepts API keys (docs/access.md): its key in `X-API-Key`, taken out by the gateway,
    the key's name given to the app in `X-Forwarded-User`; without it, 401."""
    out = subprocess.run([str(GATEWAY), "key", "new", "gradio-bot"], capture_output=True,
                         text=True, check=True).stdout
    secret = next(l for l in out.splitlines() if l.startswith("gwk_"))
    entry = next(l for l in out.splitlines() if l.startswith("- {"))
    (tmp_path / "keys.yaml").write_text(entry + "\n")
    port, https, metrics = free_port(), free_port(), free_port()
    (tmp_path / "routes.yaml").write_text(
        f"""listen:
  https: "127.0.0.1:{https}"
  metrics: "127.0.0.1:{metrics}"
api_keys: {{ file: keys.yaml }}
routes:
  - host: {VOICE}
    name: voice
    upstream: 127.0.0.1:{port}
    api_keys: true
    identity_header: X-Forwarded-User
"""
    )
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    procs = []

    def spawn(args, extra, log):
        proc = subprocess.Popen(args, env=dict(env, **extra), cwd=tmp_path,
                                stdout=open(tmp_path / log, "wb"), stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    try:
        requests = tmp_path / "requests.log"
        app = spawn([sys.executable, str(HERE / "apps/gradio_app.py")],
                    dict(PORT=str(port), REQUEST_LOG=str(requests),
                         GRADIO_TEMP_DIR=str(tmp_path / "gradio-tmp")), "gradio.log")
        wait_port(port, app, "gradio")
        gateway = spawn([str(GATEWAY), "run", "-c", str(tmp_path / "routes.yaml")],
                        dict(RUST_LOG="info", STATE_DIRECTORY=str(tmp_path / "state")),
                        "gateway.log")
        wait_port(https, gateway, "gateway", 30)
        # Every *.test name is this machine (the URL keeps the name, for SNI and Host).
        real = socket.getaddrinfo
        monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: real(
            "127.0.0.1" if str(host).endswith(".test") else host, *a, **k))
        url = f"https://{VOICE}:{https}/"
        from gradio_client import Client

        c = Client(url, headers={"X-API-Key": secret}, ssl_verify=False, verbose=False)
        assert c.predict(3, api_name="/generate").strip() == "token0 token1 token2"

        with httpx.Client(verify=False) as h:
            resp = h.get(f"{url}config", headers={"accept": "application/json"})
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["code"] == "missing_api_key"

        seen = [json.loads(l) for l in requests.read_text().splitlines()]
        through = [q for q in seen if q["x_forwarded_proto"] == "https"]
        assert through and all(q["x_forwarded_user"] == "gradio-bot" for q in through), through
        assert not any(q["credentials"] for q in through), through
        assert secret not in requests.read_text()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
