"""The soak's verdict: every failure explained by a fault or listed, uploads, streams,
memory and fd trends, p99 per 5-minute window, the gateway's counts against the run's;
then two pictures. Writes summary.md beside samples.csv; returns the exit status.
"""
import collections
import csv
import gzip
import json
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

SLOPE_LIMIT_MIB = 1.0  # per 10 minutes
FD_SLACK, THREAD_SLACK = 16, 2
UPSTREAM_POOL = 128  # Pingora's upstream_keepalive_pool_size, which the gateway keeps
SPIKE_SLACK_MIB = 10  # a spike's level after it, against the previous spike's


def save_events(rec, faults, out):
    """Every request and stream of the run, and every fault, for a look afterwards."""
    with gzip.open(out / "events.csv.gz", "wt", newline="") as f:
        w = csv.writer(f)
        w.writerow(["cls", "t0", "t1", "ok", "cause", "route", "replica", "rid"])
        for e in rec.events:
            w.writerow([e.cls, f"{e.t0:.3f}", f"{e.t1:.3f}", int(e.ok), e.cause, e.route,
                        e.replica, e.rid])
    with open(out / "faults.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "t0", "t1", "problems"])
        for x in faults:
            w.writerow([x.name, f"{x.t0:.3f}", f"{x.t1:.3f}", "; ".join(x.problems)])


def access_log(world):
    """The access log lines of the run (every file of the log's directory), by request id."""
    lines = {}
    for path in sorted(world.log_dir.glob("access.log*")):
        with open(path, "rb") as f:
            for raw in f:
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                lines[entry.get("request_id")] = entry
    return lines


def explain(e, faults, logged=None):
    """Why request/stream `e` failed because of a fault, or None. `logged`: the access
    log by request id, which says which replica a failed request was on."""
    if e.cls == "gen" and e.cause == "queue_full":
        return "refused busy: every slot taken and the queue full (by design)"
    line = (logged or {}).get(e.rid) or {}
    for f in faults:
        if f.name == "replica_kill":
            k, victim = f.notes.get("killed_at", 0), f.notes.get("address")
            if e.cls in ("sse", "ws"):
                if e.replica == f.notes["replica"] and k <= e.t1 <= k + 5:
                    return f"a stream on replica {e.replica}, SIGKILLed"
                continue
            # In flight at the kill and ended by it, on that replica as far as the
            # gateway's own line says (a line lost to the full-disk fault says nothing).
            if e.t0 <= k <= e.t1 <= k + 5 and line.get("upstream") in (None, victim):
                return "in flight when a replica was SIGKILLed"
            if (line.get("upstream") == victim and k <= e.t0 <= k + 2
                    and line.get("upstream_error") in ("reset", "protocol")):
                return "sent to a replica as it died (SIGKILL), per the access log"
        if f.name == "upstream_bad" and e.cls == "flaky" and f.t0 <= e.t1 <= f.t1 + 1:
            return "the upstream answered garbage or held its response head"
    return None


def slope_per_10min(ts, ys):
    if len(ts) < 10:
        return None
    return float(np.polyfit(np.array(ts) - ts[0], ys, 1)[0]) * 600


def spikes(done):
    """The faults that open connections by the thousand: each raises the memory high mark."""
    return [f for f in done if f.name == "fd_pressure"]


def slope_within(segments):
    """The least-squares slope common to several runs of samples, each with its own level
    (a step between them is not a trend), in MiB per 10 minutes; None when too few."""
    segments = [(np.array(ts), np.array(ys)) for ts, ys in segments if len(ts) >= 6]
    if sum(len(ts) for ts, _ in segments) < 10:
        return None
    num = sum(float(((ts - ts.mean()) * (ys - ys.mean())).sum()) for ts, ys in segments)
    den = sum(float(((ts - ts.mean()) ** 2).sum()) for ts, _ in segments)
    return num / den * 600 if den else None


def memory(world, rows, done, sampler, say, bad):
    """Per process, from its 10th minute: the slope over all its samples (the figure the
    issue names), and the slope between connection spikes, each spike's step allowed
    (from the spike until 2 minutes after it ends left out): that one must be flat (the
    slope over all, when too few samples lie between spikes). Then each spike's step:
    before, held, after; a spike must not leave the process higher than the one before
    left its process (a leak per connection would)."""
    say("\n## Memory\n\n| process | served | samples from its 10th minute | RSS slope, all "
        "(MiB per 10 min) | RSS slope between spikes |")
    say("|---|---|---:|---:|---:|")
    for g in world.gateways:
        mine = [r for r in rows if r["serving_pid"] == g.pid and r["t"] - g.started >= 600
                and r["rss_mib"] == r["rss_mib"]]
        served = [r for r in rows if r["serving_pid"] == g.pid]
        span = (f"{served[0]['elapsed_s'] / 60:.1f}–{served[-1]['elapsed_s'] / 60:.1f} min"
                if served else "—")
        whole = slope_per_10min([r["t"] for r in mine], [r["rss_mib"] for r in mine])
        segments, cut = [[]], [(f.t0, f.t1 + 120) for f in spikes(done)]
        for r in mine:
            if any(a <= r["t"] <= b for a, b in cut):
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append(r)
        between = slope_within([([r["t"] for r in seg], [r["rss_mib"] for r in seg])
                                for seg in segments])
        fmt = lambda v: "n/a (too short)" if v is None else f"{v:+.3f}"  # noqa: E731
        say(f"| {g.name} (pid {g.pid}) | {span} | {len(mine)} | {fmt(whole)} | {fmt(between)} |")
        judged = whole if between is None else between
        if judged is not None and judged >= SLOPE_LIMIT_MIB:
            bad.append(f"{g.name}: RSS grows {judged:.2f} MiB per 10 min"
                       + (" between spikes" if between is not None else ""))
    say("\n| connection spike | at | process | RSS before | held | 2–3 min after |")
    say("|---|---|---|---:|---:|---:|")
    previous = None
    for f in spikes(done):
        pid = next((r["serving_pid"] for r in rows if r["t"] >= f.t0), None)
        own = [r for r in rows if r["serving_pid"] == pid and r["rss_mib"] == r["rss_mib"]]
        med = lambda rs: float(np.median([r["rss_mib"] for r in rs])) if rs else float("nan")  # noqa: E731
        before = med([r for r in own if f.t0 - 30 <= r["t"] < f.t0])
        held = max((r["rss_mib"] for r in own if f.t0 <= r["t"] <= f.t1), default=float("nan"))
        after = med([r for r in own if f.t1 + 120 <= r["t"] <= f.t1 + 180])
        say(f"| {f.name} | {(f.t0 - sampler.start) / 60:.1f} min | {pid} | {before:.0f} MiB | "
            f"{held:.0f} MiB | {after:.0f} MiB |")
        if previous is not None and after > previous + SPIKE_SLACK_MIB:
            bad.append(f"the spike at {(f.t0 - sampler.start) / 60:.1f} min left RSS at "
                       f"{after:.0f} MiB, the one before at {previous:.0f} MiB")
        if after == after:
            previous = after


def fds_and_threads(rows, done, sampler, say, bad):
    """The serving process's fds (apart from established upstream connections, which the
    pool keeps up to its size, also checked) and threads, 30–60 s after each fault
    against the 30 s before. A sample that could not be read fails the check."""
    say("\n## fds and threads around each fault (serving process)\n")
    say("fds apart from established upstream connections; those are shown as +N (the pool "
        f"of idle connections to the apps keeps up to {UPSTREAM_POOL}).\n")
    say("| fault | at | fds before | fds 30–60 s after | threads before | threads after |")
    say("|---|---|---:|---:|---:|---:|")
    for i, f in enumerate(done):
        nxt = done[i + 1].t0 if i + 1 < len(done) else rows[-1]["t"] + 1
        before = [r for r in rows if f.t0 - 30 <= r["t"] < f.t0]
        after = [r for r in rows if f.t1 + 30 <= r["t"] <= min(f.t1 + 60, nxt)]
        if not before or not after:
            continue
        med = lambda rs, k: float(np.median([r[k] for r in rs]))  # noqa: E731
        for r in before + after:
            r["own_fds"] = r["fds"] - r["upstream_fds"]
        fb, fa = med(before, "own_fds"), med(after, "own_fds")
        ub, ua = med(before, "upstream_fds"), med(after, "upstream_fds")
        tb, ta = med(before, "threads"), med(after, "threads")
        flag = ""
        if not (fa <= fb + FD_SLACK and ta <= tb + THREAD_SLACK and ua <= UPSTREAM_POOL):
            flag = " **not back**"
            bad.append(f"{f.name} at {f.t0 - sampler.start:.0f} s: fds {fb:.0f}→{fa:.0f} "
                       f"(upstream {ub:.0f}→{ua:.0f}), threads {tb:.0f}→{ta:.0f}")
        say(f"| {f.name}{flag} | {(f.t0 - sampler.start) / 60:.1f} min | {fb:.0f} +{ub:.0f} | "
            f"{fa:.0f} +{ua:.0f} | {tb:.0f} | {ta:.0f} |")


def verdict(world, rec, sampler, faults, minutes):
    out, lines, bad = world.out, [], []
    say = lines.append
    rows, done = sampler.rows, faults.done
    say(f"# Soak: {minutes:g} minutes, {len(done)} faults, "
        f"{len(rec.events)} requests and streams\n")

    # ---- failures --------------------------------------------------------------------
    save_events(rec, done, out)
    logged = access_log(world)
    unexplained = collections.defaultdict(list)
    explained = collections.Counter()
    for e in rec.events:
        if e.ok:
            continue
        why = explain(e, done, logged)
        if why:
            explained[why] += 1
        else:
            unexplained[f"{e.cls} {e.route}: {e.cause}"].append(e)
    by_class = collections.Counter(e.cls for e in rec.events)
    say("## Requests and streams\n\n| class | count | failed | explained by a fault |")
    say("|---|---:|---:|---:|")
    for cls, n in sorted(by_class.items()):
        failed = [e for e in rec.events if e.cls == cls and not e.ok]
        expl = sum(1 for e in failed if explain(e, done, logged))
        say(f"| {cls} | {n} | {len(failed)} | {expl} |")
    say("\nExplained failures:\n")
    for why, n in explained.most_common():
        say(f"- {n} × {why}")
    n_unexplained = sum(len(v) for v in unexplained.values())
    say(f"\n**Unexplained failures: {n_unexplained}**\n")
    for what, evs in sorted(unexplained.items()):
        when = ", ".join(time.strftime("%H:%M:%S", time.localtime(e.t1)) for e in evs[:5])
        say(f"- {len(evs)} × {what} (at {when}{'…' if len(evs) > 5 else ''})")
    if n_unexplained:
        bad.append(f"{n_unexplained} unexplained failures")
    problems = [(f.name, p) for f in done for p in f.problems]
    say(f"\n**Faults whose checks failed: {len(problems)}**\n")
    for name, p in problems:
        say(f"- {name}: {p}")
    if problems:
        bad.append(f"{len(problems)} fault checks failed")

    uploads = [e for e in rec.events if e.cls == "upload"]
    corrupted = [e for e in uploads if e.cause.startswith("corrupted")]
    say(f"\nUploads of 50 MiB: {len(uploads)}, {sum(e.ok for e in uploads)} verified by the "
        f"app's SHA-256, {len(corrupted)} corrupted.")
    if corrupted:
        bad.append(f"{len(corrupted)} corrupted uploads")
    for cls in ("sse", "ws"):
        evs = [e for e in rec.events if e.cls == cls]
        cut = [e for e in evs if not e.ok]
        say(f"{cls.upper()} streams: {len(evs)}, longest {max((e.t1 - e.t0 for e in evs), default=0):.0f} s, "
            f"cut {len(cut)} ({sum(1 for e in cut if explain(e, done, logged))} by a SIGKILLed replica).")
    # The queue refuses by design, but no more than a burst of 24 can overflow: 2 slots
    # per replica and 16 places leave 4 refused (6 with a replica down).
    bursts, last = [], None
    for e in sorted((e for e in rec.events if e.cls == "gen"), key=lambda e: e.t0):
        if last is None or e.t0 - last > 5:
            bursts.append(0)
        bursts[-1] += e.cause == "queue_full"
        last = e.t0
    say(f"Bursts on the queue: {len(bursts)}, refused busy per burst: at most "
        f"{max(bursts, default=0)} (4 by design, 6 with a replica down).")
    if any(n > 6 for n in bursts):
        bad.append(f"a burst had {max(bursts)} requests refused busy, more than 6")

    # ---- memory, fds, threads ----------------------------------------------------------
    memory(world, rows, done, sampler, say, bad)
    fds_and_threads(rows, done, sampler, say, bad)

    # ---- latency -----------------------------------------------------------------------
    say("\n## Keep-alive GETs, p99 per 5-minute window\n")
    gets = [e for e in rec.events if e.cls == "get" and e.ok]
    windows = collections.defaultdict(list)
    for e in gets:
        windows[int((e.t0 - sampler.start) // 300)].append(1000 * (e.t1 - e.t0))
    first = None
    say("| window | requests | p50 ms | p99 ms | vs first |")
    say("|---|---:|---:|---:|---:|")
    for w in sorted(windows):
        lat = windows[w]
        p99 = float(np.percentile(lat, 99))
        first = first or p99
        say(f"| {w * 5}–{w * 5 + 5} min | {len(lat)} | {np.percentile(lat, 50):.1f} | {p99:.1f} | {p99 / first:.2f}× |")
        if p99 > 2 * first and len(lat) > 200:
            bad.append(f"p99 of window {w * 5}–{w * 5 + 5} min is {p99 / first:.2f}× the first's")

    # ---- the gateway's own counts --------------------------------------------------------
    say("\n## The gateway's counts against the run's\n")
    status, text = world.check()
    say(f"- `gateway check` on the final routes.yaml: exit {status}")
    if status != 0:
        bad.append(f"gateway check failed: {text[:300]}")
    agree = [
        ("reloads, successful", sampler.counter("gateway_config_reloads_total", result="success"),
         faults.expect["reload_success"]),
        ("reloads, failed", sampler.counter("gateway_config_reloads_total", result="failure"),
         faults.expect["reload_failure"]),
        ("failed logins (401 on login)", sampler.counter("gateway_rejected_total", reason="auth", route="login"),
         sum(1 for e in rec.events if e.cls == "bad_login" and e.ok)),
        ("refused busy (queue_full)", sampler.counter("gateway_rejected_total", reason="queue_full"),
         sum(1 for e in rec.events if e.cls == "gen" and e.cause == "queue_full")),
    ]
    for what, got, want in agree:
        mark = "" if got == want else " **differs**"
        say(f"- {what}: metrics {got:.0f}, the run {want}{mark}")
        if got != want:
            bad.append(f"{what}: metrics {got:.0f}, the run {want}")
    issued = sampler.counter("gateway_acme_orders_total", result="issued")
    failed = sampler.counter("gateway_acme_orders_total", result="failed")
    seen = len(rec.serials)
    say(f"- ACME orders: {issued:.0f} issued ({issued - 1:.0f} renewals), {failed:.0f} failed; "
        f"distinct certificates the clients saw on acme.soak.test: {seen}")
    # A client connects every 2 s: it sees every certificate, but perhaps not one issued
    # in the last seconds. Ten-minute certificates renew about every 7 minutes.
    if not issued - 1 <= seen <= issued:
        bad.append(f"{issued:.0f} certificates issued, {seen} seen by the clients")
    if minutes >= 20 and issued < minutes / 10:
        bad.append(f"only {issued:.0f} certificates issued in {minutes:g} minutes")
    lost = sampler.counter("gateway_access_log_dropped_total") + sampler.counter(
        "gateway_access_log_unwritten_total")
    say(f"- access log lines counted as not written: {lost:.0f}")
    try:
        up = world.prometheus_query(f"min_over_time(up[{int(minutes * 60)}s])")
        scrapes = world.prometheus_query(f"count_over_time(up[{int(minutes * 60)}s])")
        say(f"- Prometheus: {scrapes[0]['value'][1]} scrapes, min(up) = {up[0]['value'][1]}")
        if up[0]["value"][1] != "1":
            bad.append("Prometheus missed a scrape")
    except Exception as e:  # noqa: BLE001
        say(f"- Prometheus: query failed: {e}")

    say("\n## Faults\n\n| at | fault | lasted | notes |\n|---|---|---:|---|")
    for f in done:
        notes = ", ".join(f"{k}={v}" for k, v in f.notes.items() if k not in ("killed_at", "filled_at"))
        notes = " ".join(notes.split())[:160].replace("|", "/")
        say(f"| {(f.t0 - sampler.start) / 60:.1f} min | {f.name} | {f.t1 - f.t0:.0f} s | {notes} |")

    say("\n## Verdict\n")
    say("\n".join(f"- FAIL: {b}" for b in bad) if bad else "PASS: every check held.")
    pictures(rows, done, sampler.start, out)
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    print(text)
    return 1 if bad else 0


def mark_faults(ax, faults, start):
    for f in faults:
        x = (f.t0 - start) / 60
        ax.axvline(x, color="grey", alpha=0.4, lw=0.8)
        ax.text(x, 1.0, f.name.replace("_", " "), rotation=90, va="top", ha="right",
                fontsize=6, color="dimgrey", transform=ax.get_xaxis_transform())


def pictures(rows, faults, start, out):
    """Two figures of two panels each, faults marked: memory, fds and threads; request
    rate and latency."""
    if not rows:
        return
    figure(rows, faults, start, out / "soak-memory.png",
           "gateway soak: memory, fds and threads (faults marked)",
           ("MiB", "linear", [("rss_mib", "RSS, serving process", "-"),
                              ("pss_mib", "PSS, serving process", "-"),
                              ("all_rss_mib", "RSS, all gateway processes", "--")]),
           ("count", "log", [("fds", "open fds, serving process", "-"),
                             ("upstream_fds", "of which upstream connections", ":"),
                             ("threads", "threads, serving process", "-")]))
    figure(rows, faults, start, out / "soak-traffic.png",
           "gateway soak: request rate and latency (faults marked)",
           ("requests/s", "linear", [("rps", "requests/s (all classes)", "-")]),
           ("ms (per 10 s)", "log", [("get_p99_ms", "keep-alive GET p99", "-"),
                                     ("get_p50_ms", "keep-alive GET p50", "-")]))


def figure(rows, faults, start, path, title, *panels):
    """`panels`: (y label, y scale, [(CSV column, legend, line style)]), top to bottom."""
    x = [r["elapsed_s"] / 60 for r in rows]
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 7), sharex=True)
    for ax, (ylabel, scale, series) in zip(axes, panels):
        for column, label, style in series:
            ax.plot(x, [float(r[column]) if r[column] != "" else np.nan for r in rows],
                    label=label, ls=style)
        ax.set_yscale(scale)
        ax.set_ylabel(ylabel)
        ax.legend(loc="upper right", fontsize=8)
        mark_faults(ax, faults, start)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
