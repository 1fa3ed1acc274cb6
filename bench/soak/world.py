"""The soak's world: every process it starts (gateway, replicas, sign-on service, Redis,
Pebble and its DNS, Prometheus), the files they read, and how each is stopped.

Every process is started here, on 127.0.0.1 and free ports, and stopped by its PID.
"""
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The gateway's open-files limit: low enough that the fd fault can come near it.
NOFILE = 4096
# Its connection cap follows from it (configuration.md, limits.max_connections: auto).
MAX_CONNECTIONS = (NOFILE - 256) // 2


def free_port():
    """A free port below Linux's ephemeral range (32768 and up), so that no outgoing
    connection takes the port of a replica while it is down between SIGKILL and restart."""
    for _ in range(1000):
        port = random.randint(20000, 32767)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32767")


def wait_until(what, check, timeout, every=0.1):
    """Polls `check` until it returns a true value (returned), for at most `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(every)
    raise RuntimeError(f"{what}: not within {timeout} s (last error: {last})")


def port_open(port):
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class Proc:
    """One child process, its output appended to `log`, stopped by PID."""

    def __init__(self, name, argv, log, env=None, cwd=None):
        self.name, self.log = name, log
        out = open(log, "ab")
        self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                      start_new_session=True)
        out.close()
        self.pid = self.popen.pid
        self.started = time.time()

    def alive(self):
        return self.popen.poll() is None

    def send(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Signals the process and waits; SIGKILL after `timeout` s."""
        if not self.alive():
            return self.popen.returncode
        os.kill(self.pid, sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.popen.wait(10)


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


class World:
    def __init__(self, out, gateway_bin, venv_python):
        self.out = Path(out)
        self.bin = gateway_bin
        self.py = venv_python
        self.procs = []  # everything started, for the final stop
        self.gateways = []  # gateway Procs in start order; the last is the serving one
        self.ports = {k: free_port() for k in (
            "https", "http", "metrics", "redis", "pebble", "pebble_mgmt", "dns",
            "cts_mgmt", "prometheus", "replica_a", "replica_b", "signon")}
        self.flaky_port = None
        self.log_dir = self.out / "logs"  # the access log's file system (a tmpfs as root)
        self.tmpfs = False
        self.pebble = None
        self.redis = None
        self.replicas = {}
        self.extra_route = False
        self.key = None

    # ---- files ----------------------------------------------------------------------

    def make_files(self):
        (self.out / "state").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            run(["mount", "-t", "tmpfs", "-o", "size=256m", "soak-logs", str(self.log_dir)])
            self.tmpfs = True
        self._certs()
        run(["htpasswd", "-B", "-C", "5", "-b", "-c", str(self.out / "htpasswd"),
             "soak", "soak-password"])
        made = run([self.bin, "key", "new", "soak-bot"]).stdout.splitlines()
        self.key = next(line for line in made if line.startswith("gwk_"))
        entry = next(line for line in made if line.startswith("- {"))
        (self.out / "keys.yaml").write_text(entry + "\n")
        self.write_routes()

    def _certs(self):
        d = self.out / "certs"
        d.mkdir(exist_ok=True)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.pem",
             "-days", "3", "-subj", "/CN=soak test CA"])
        (d / "ext.cnf").write_text(
            "subjectAltName=DNS:*.soak.test,DNS:localhost,IP:127.0.0.1\n"
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
        run(["openssl", "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr",
             "-subj", "/CN=soak.test"])
        run(["openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem",
             "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "3", "-extfile",
             d / "ext.cnf", "-out", d / "server.pem"])
        self.ca = d / "ca.pem"
        self.cert, self.cert_key = d / "server.pem", d / "server.key"
        self.acme_roots = d / "acme-roots.pem"
        self.acme_roots.write_text("")

    def routes_yaml(self, extra=False):
        p = self.ports
        pool = f"[127.0.0.1:{p['replica_a']}, 127.0.0.1:{p['replica_b']}]"
        health = "{ path: /health, interval: 1s, timeout: 1s, unhealthy_after: 1, healthy_after: 2 }"
        text = f"""# Written by bench/soak: the soak's gateway configuration.
listen:
  https: "127.0.0.1:{p['https']}"
  http: "127.0.0.1:{p['http']}"
  metrics: "127.0.0.1:{p['metrics']}"
tls:
  cert: {self.cert}
  key: {self.cert_key}
state_dir: {self.out / 'state'}
access_log: {self.log_dir / 'access.log'}
upgrade_sock: {self.out / 'upgrade.sock'}
upgrade_grace: 2h
acme:
  email: soak@example.com
  directory: https://127.0.0.1:{p['pebble']}/dir
  ca_bundle: {self.ca}
  first_retry: 10s
  max_retry: 1m
limits_store:
  redis: redis://127.0.0.1:{p['redis']}/0
  timeout: 50ms
api_keys:
  file: {self.out / 'keys.yaml'}
defaults:
  rate_limit: {{ rate: 300/s, burst: 600 }}
routes:
  - host: app.soak.test
    name: app
    upstream: {pool}
    health: {health}
  - host: app.soak.test
    path: /api/
    name: api
    upstream: {pool}
    health: {health}
    api_keys: true
    identity_header: X-Forwarded-User
    rate_limit: {{ rate: 100/s, burst: 200, key: api_key }}
  - host: app.soak.test
    path: /gen/
    name: gen
    upstream: {pool}
    health: {health}
    max_concurrent: 2
    queue: {{ size: 16, timeout: 60s }}
  - host: login.soak.test
    name: login
    upstream: {pool}
    health: {health}
    basic_auth:
      htpasswd: {self.out / 'htpasswd'}
  - host: sso.soak.test
    name: sso
    upstream: {pool}
    health: {health}
    forward_auth:
      url: http://127.0.0.1:{p['signon']}/auth
      copy_headers: [X-Auth-Request-User]
  - host: acme.soak.test
    name: acme
    upstream: {pool}
    health: {health}
    tls: acme
  - host: flaky.soak.test
    name: flaky
    upstream: 127.0.0.1:{self.flaky_port}
    read_timeout: 2s
"""
        if extra:
            text += f"""  - host: extra.soak.test
    name: extra
    upstream: {pool}
    health: {health}
"""
        return text

    def write_routes(self, text=None):
        path = self.out / "routes.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text if text is not None else self.routes_yaml(self.extra_route))
        tmp.rename(path)

    # ---- processes ------------------------------------------------------------------

    def start(self, name, argv, env=None, cwd=None):
        proc = Proc(name, [str(a) for a in argv], self.out / f"{name}.log", env=env, cwd=cwd)
        self.procs.append(proc)
        return proc

    def start_redis(self):
        self.redis = self.start("redis", [
            "redis-server", "--port", self.ports["redis"], "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", self.out])
        wait_until("redis", lambda: port_open(self.ports["redis"]), 10)

    def start_replica(self, name):
        env = dict(os.environ, SOAK_ROLE="replica", SOAK_REPLICA=name)
        port = self.ports[f"replica_{name}"]
        proc = self.start(f"replica-{name}", [
            self.py, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", port,
            "--ws", "wsproto", "--http", "h11", "--no-access-log",
            "--timeout-keep-alive", "120"], env=env, cwd=HERE)
        self.replicas[name] = proc
        wait_until(f"replica {name}", lambda: port_open(port), 20)
        return proc

    def start_signon(self):
        env = dict(os.environ, SOAK_ROLE="signon")
        self.start("signon", [self.py, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
                              "--port", self.ports["signon"], "--no-access-log"],
                   env=env, cwd=HERE)
        wait_until("sign-on service", lambda: port_open(self.ports["signon"]), 20)

    def start_pebble(self):
        d = self.out / "pebble"
        d.mkdir(exist_ok=True)
        p = self.ports
        (d / "pebble.json").write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{p['pebble']}",
            "managementListenAddress": f"127.0.0.1:{p['pebble_mgmt']}",
            "certificate": str(self.cert), "privateKey": str(self.cert_key),
            "httpPort": p["http"], "tlsPort": free_port(), "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            # Ten minutes: renewed when a third remains, so about every 400 s.
            "certificateValidityPeriod": 600}}))
        if not any(pr.name == "challtestsrv" for pr in self.procs):
            self.start("challtestsrv", [
                "pebble-challtestsrv", "-dns01", f"127.0.0.1:{p['dns']}", "-http01", "",
                "-https01", "", "-tlsalpn01", "", "-management",
                f"127.0.0.1:{p['cts_mgmt']}", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            wait_until("challtestsrv", lambda: port_open(p["dns"]), 10)
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
                   PEBBLE_AUTHZREUSE="0")
        self.pebble = self.start("pebble", ["pebble", "-config", d / "pebble.json",
                                            "-dnsserver", f"127.0.0.1:{p['dns']}"], env=env)
        wait_until("pebble", lambda: port_open(p["pebble"]), 20)
        # Each start makes a new issuing root: the acme client trusts every one seen.
        root = wait_until("pebble root", lambda: self._pebble_root(), 20)
        with open(self.acme_roots, "a") as f:
            f.write(root)

    def _pebble_root(self):
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.ca))
        url = f"https://127.0.0.1:{self.ports['pebble_mgmt']}/roots/0"
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.read().decode()

    def start_prometheus(self):
        d = self.out / "prometheus"
        d.mkdir(exist_ok=True)
        (d / "prometheus.yml").write_text(f"""global:
  scrape_interval: 5s
  scrape_timeout: 4s
scrape_configs:
  - job_name: gateway
    static_configs:
      - targets: ["127.0.0.1:{self.ports['metrics']}"]
""")
        self.start("prometheus", [
            "prometheus", f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}"])
        wait_until("prometheus", lambda: port_open(self.ports["prometheus"]), 30)

    def prometheus_query(self, expr):
        q = urllib.parse.urlencode({"query": expr})
        url = f"http://127.0.0.1:{self.ports['prometheus']}/api/v1/query?{q}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]["result"]

    def check(self):
        """`gateway check` on the current routes.yaml: (exit status, output)."""
        r = subprocess.run([self.bin, "check", "-c", self.out / "routes.yaml"],
                           capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr

    def start_gateway(self, upgrade=False):
        n = len(self.gateways) + 1
        argv = ["prlimit", f"--nofile={NOFILE}:{NOFILE}", "--", self.bin, "run",
                "-c", self.out / "routes.yaml"]
        if upgrade:
            argv.append("--upgrade")
        gw = self.start(f"gateway-{n}", argv)
        self.gateways.append(gw)
        return gw

    def serving(self):
        return self.gateways[-1]

    def upstream_ports(self):
        """The ports the gateway connects to: the replicas, the flaky app, sign-on."""
        ports = {int(self.ports[k]) for k in ("replica_a", "replica_b", "signon")}
        return ports | ({int(self.flaky_port)} if self.flaky_port else set())

    def live_gateways(self):
        return [g for g in self.gateways if g.alive()]

    def metrics_text(self):
        url = f"http://127.0.0.1:{self.ports['metrics']}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def post_reload(self):
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['metrics']}/-/reload",
                                     method="POST", data=b"")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop_all(self):
        # Gateways first (SIGTERM: they drain), then the rest, newest first.
        for proc in reversed(self.procs):
            if proc.name.startswith("gateway"):
                proc.stop(signal.SIGTERM, timeout=40)
        for proc in reversed(self.procs):
            proc.stop(signal.SIGTERM, timeout=10)
        if self.tmpfs:
            # The access logs, kept: the tmpfs goes.
            subprocess.run(["cp", "-a", str(self.log_dir), str(self.out / "access-logs")],
                           check=False)
            subprocess.run(["umount", str(self.log_dir)], check=False)
