#!/usr/bin/env bash
# What the metrics cost: the same gateway with and without `listen.metrics` (which turns
# recording on), proxying small requests to an nginx upstream, alternating A/B rounds in
# one run. Prints requests per second and the gateway's CPU time per request (from
# /proc, far less noisy than throughput on a shared 2-core machine) of each round, and
# the median ratios.
#
#   bench/metrics-overhead.sh [ROUNDS] [SECONDS]    (default 6 rounds of 5 s)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-6}; secs=${2:-5}
up=$(port)
start_upstream "$up"
mkdir -p "$work/certs"
declare -A https gwpid
for variant in on off; do
  https[$variant]=$(port)
  metrics=""
  [ $variant = on ] && metrics="metrics: \"127.0.0.1:$(port)\""
  cat >"$work/$variant.yaml" <<YAML
listen: { https: "127.0.0.1:${https[$variant]}", $metrics }
access_log: off
routes:
  - host: bench.test
    upstream: 127.0.0.1:$up
YAML
  start_gateway "$work/$variant.yaml" "${https[$variant]}"
  gwpid[$variant]=$gw
done
cat >"$work/host.lua" <<'LUA'
wrk.headers["Host"] = "bench.test"
LUA
declare -A results cpu
for r in $(seq "$rounds"); do
  order="on off"; [ $((r % 2)) = 0 ] && order="off on"   # no side always goes first
  for variant in $order; do
    before=$(cpu_ticks "${gwpid[$variant]}")
    out=$(wrk -t2 -c32 -d"${secs}s" -s "$work/host.lua" "https://127.0.0.1:${https[$variant]}/")
    after=$(cpu_ticks "${gwpid[$variant]}")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    us=$(python3 -c "print(f'{($after - $before) / $tick / $n * 1e6:.2f}')")
    echo "round $r metrics $variant: $rps req/s, gateway CPU $us us/request"
    results[$variant]+="$rps "
    cpu[$variant]+="$us "
  done
done
python3 - "${results[on]}" "${results[off]}" "${cpu[on]}" "${cpu[off]}" <<'PY'
import statistics, sys
on, off, cpu_on, cpu_off = ([float(x) for x in a.split()] for a in sys.argv[1:5])
m_on, m_off = statistics.median(on), statistics.median(off)
c_on, c_off = statistics.median(cpu_on), statistics.median(cpu_off)
print(f"median req/s: metrics on {m_on:.0f}, off {m_off:.0f}; on/off = {m_on / m_off:.3f}")
print(f"median gateway CPU per request: on {c_on:.2f} us, off {c_off:.2f} us; metrics cost {100 * (c_on / c_off - 1):.1f}% of the gateway's CPU")
PY
