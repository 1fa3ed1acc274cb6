"""The memory and fd checks of `report.py` again, on a finished run's files: for a run
made before a check changed, or to look at one again.

    bench/soak/.venv/bin/python bench/soak/recheck.py target/soak/RUN

Reads RUN/samples.csv and RUN/faults.csv (the summary's other checks need the run's
clients and are not repeated). A gateway process counts from its first sample.
"""
import csv
import sys
from pathlib import Path
from types import SimpleNamespace

import report


def main(run):
    with open(run / "samples.csv", newline="") as f:
        rows = [{k: number(v) for k, v in r.items()} for r in csv.DictReader(f)]
    with open(run / "faults.csv", newline="") as f:
        done = [SimpleNamespace(name=r["name"], t0=float(r["t0"]), t1=float(r["t1"]))
                for r in csv.DictReader(f)]
    for r in rows:  # a run from before the column: all its fds were the gateway's own
        r.setdefault("upstream_fds", 0)
    gateways, seen = [], set()
    for r in rows:
        if r["serving_pid"] not in seen:
            seen.add(r["serving_pid"])
            gateways.append(SimpleNamespace(name=f"gateway-{len(gateways) + 1}",
                                            pid=r["serving_pid"], started=r["t"]))
    lines, bad = [], []
    sampler = SimpleNamespace(start=rows[0]["t"] - rows[0]["elapsed_s"])
    report.memory(SimpleNamespace(gateways=gateways), rows, done, sampler, lines.append, bad)
    report.fds_and_threads(rows, done, sampler, lines.append, bad)
    print("\n".join(lines))
    print("\n## Verdict\n\n" + ("PASS: every check held." if not bad
                                else "FAILED:\n" + "\n".join(f"- {b}" for b in bad)))
    return 0 if not bad else 1


def number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
