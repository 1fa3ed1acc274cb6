"""Every 10 s: each gateway process's memory, fds and threads, the clients' rates and
latencies, and the gateway's own counters; one CSV row per sample.

Counters restart at 0 in a new process (binary upgrade): `Sampler` adds up each process's
last counts (the old one's last scrape is taken while it alone listens).
"""
import csv
import os
import re
import time
from pathlib import Path

import numpy as np

SAMPLE_EVERY = 10
CLASSES = ["get", "flaky", "gen", "upload", "tls_new", "bad_login"]
COLUMNS = (["t", "elapsed_s", "fault", "serving_pid", "gateways", "rss_mib", "pss_mib",
            "fds", "upstream_fds", "threads", "all_rss_mib", "all_pss_mib", "all_fds", "rps", "failures"]
           + [f"{c}_{q}" for c in CLASSES for q in ("p50_ms", "p99_ms")]
           + ["failures_by_cause", "queue_depth", "open_connections", "websockets",
              "cert_expiry_s", "access_log_lost", "reloads_ok", "reloads_failed"])
LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([-+0-9.eEinfNa]+)$')


def proc_stats(pid):
    """(RSS MiB, PSS MiB, fds, threads) of a live process, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
        field = lambda text, name: int(re.search(rf"^{name}:\s+(\d+)", text, re.M).group(1))  # noqa: E731
        return (field(status, "VmRSS") / 1024, field(rollup, "Pss") / 1024, fds,
                field(status, "Threads"))
    except (OSError, AttributeError):  # gone, or a zombie without memory
        return None


def upstream_sockets(pid, ports):
    """How many of `pid`'s fds are established TCP connections to one of `ports` (the
    apps, the sign-on service): the pool of idle upstream connections, bounded by its
    size, apart from the fds a client's connection holds. A socket the app has closed
    (CLOSE_WAIT) is not counted here: it stays among the gateway's own fds, where a leak
    of them shows."""
    remote = {}
    try:
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "01":  # ESTABLISHED
                remote[f[9]] = int(f[2].split(":")[1], 16)
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return float("nan")
    count = 0
    for fd in fds:
        try:
            link = os.readlink(fd)
        except OSError:  # closed since the listing
            continue
        count += link.startswith("socket:[") and remote.get(link[8:-1]) in ports
    return count


def parse_metrics(text):
    out = {}
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def labels_match(labels, want):
    return all(f'{k}="{v}"' in labels for k, v in want.items())


class Sampler:
    def __init__(self, world, rec, csv_path):
        self.w, self.rec = world, rec
        self.csv_path = csv_path
        self.rows = []
        self.fault = ""
        self.metrics = {}  # the last scrape
        self.totals = {}  # counters added up over gateway processes
        self.last = {}  # process start time -> its counters at its last scrape
        self.start = time.time()
        self.seen = 0  # events already looked at

    # ---- counters over processes -------------------------------------------------------

    def scrape(self):
        """Reads /metrics: each process (told apart by its start time) keeps its last
        counts, and a counter's total over the run is the sum of those."""
        try:
            m = parse_metrics(self.w.metrics_text())
        except Exception:  # noqa: BLE001 - no answer (an upgrade's moment): next time
            return
        proc = m.get(("process_start_time_seconds", ""), 0.0)
        self.last[proc] = {k: v for k, v in m.items() if k[0].endswith("_total")}
        totals = {}
        for counts in list(self.last.values()):
            for key, value in counts.items():
                totals[key] = totals.get(key, 0.0) + value
        # Read from the event loop's thread meanwhile: replaced whole, never half-built.
        self.totals, self.metrics = totals, m

    def counter(self, name, **want):
        return sum(v for (n, labels), v in self.totals.items()
                   if n == name and labels_match(labels, want))

    def gauge(self, name, **want):
        vals = [v for (n, labels), v in self.metrics.items()
                if n == name and labels_match(labels, want)]
        return sum(vals) if vals else float("nan")

    # ---- samples -----------------------------------------------------------------------

    def sample(self):
        self.scrape()
        now = time.time()
        events = self.rec.events[self.seen:]
        self.seen = len(self.rec.events)
        serving = self.w.serving()
        stats = {g.pid: proc_stats(g.pid) for g in self.w.live_gateways()}
        stats = {pid: s for pid, s in stats.items() if s}
        mine = stats.get(serving.pid) or (float("nan"),) * 4
        row = {
            "t": round(now, 1), "elapsed_s": round(now - self.start, 1), "fault": self.fault,
            "serving_pid": serving.pid, "gateways": len(stats),
            "rss_mib": round(mine[0], 2), "pss_mib": round(mine[1], 2), "fds": mine[2],
            "upstream_fds": upstream_sockets(serving.pid, self.w.upstream_ports()),
            "threads": mine[3],
            "all_rss_mib": round(sum(s[0] for s in stats.values()), 2),
            "all_pss_mib": round(sum(s[1] for s in stats.values()), 2),
            "all_fds": sum(s[2] for s in stats.values()),
            "rps": round(sum(1 for e in events if e.cls not in ("sse", "ws")) / SAMPLE_EVERY, 1),
            "failures": sum(1 for e in events if not e.ok),
        }
        for c in CLASSES:
            lat = [1000 * (e.t1 - e.t0) for e in events if e.cls == c and e.ok]
            row[f"{c}_p50_ms"] = round(float(np.percentile(lat, 50)), 1) if lat else ""
            row[f"{c}_p99_ms"] = round(float(np.percentile(lat, 99)), 1) if lat else ""
        causes = {}
        for e in events:
            if not e.ok:
                causes[f"{e.cls}:{e.cause}"] = causes.get(f"{e.cls}:{e.cause}", 0) + 1
        row["failures_by_cause"] = "; ".join(f"{k}={v}" for k, v in sorted(causes.items()))
        row["queue_depth"] = self.gauge("gateway_queue_depth", route="gen")
        row["open_connections"] = self.gauge("gateway_open_connections", listener="https")
        row["websockets"] = self.gauge("gateway_websocket_sessions")
        expiry = self.gauge("gateway_tls_certificate_expiry_timestamp_seconds",
                            host="acme.soak.test")
        row["cert_expiry_s"] = round(expiry - now) if expiry == expiry else ""
        row["access_log_lost"] = (self.counter("gateway_access_log_dropped_total")
                                  + self.counter("gateway_access_log_unwritten_total"))
        row["reloads_ok"] = self.counter("gateway_config_reloads_total", result="success")
        row["reloads_failed"] = self.counter("gateway_config_reloads_total", result="failure")
        self.rows.append(row)
        self.write()
        return row

    def write(self):
        with open(self.csv_path, "w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=COLUMNS)
            out.writeheader()
            out.writerows(self.rows)
