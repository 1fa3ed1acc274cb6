#!/usr/bin/env bash
# What sharing the rate limits through Redis costs: the same gateway and route
# (`rate_limit` high enough never to refuse) with this replica's own buckets (`local`)
# and with `limits_store` on a local redis-server (`redis`), alternating rounds in one
# run. Prints each round's requests per second, p50 and p99 latency (wrk --latency) and
# the gateway's CPU time per request, then the medians and the differences. Then
# measures Redis memory per client key: requests from fresh `X-Api-Key` values, and
# Redis' `used_memory` growth divided by the keys it holds.
#
#   bench/limits-store.sh [ROUNDS] [SECONDS] [KEY_SECONDS]   (default 6 rounds of 5 s, 10 s)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-6}; secs=${2:-5}; key_secs=${3:-10}
command -v redis-server >/dev/null || { echo "needs redis-server: apt-get install -y redis-server redis-tools"; exit 1; }
up=$(port)
start_upstream "$up"
rport=$(port)
redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  >"$work/redis.log" 2>&1 &
redis=$!
pids+=("$redis")
for _ in $(seq 100); do [ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
declare -A https gwpid
for variant in local redis; do
  https[$variant]=$(port)
  store=""
  [ $variant = redis ] && store="limits_store: { redis: \"redis://127.0.0.1:$rport/0\", timeout: 20ms }"
  cat >"$work/$variant.yaml" <<YAML
listen: { https: "127.0.0.1:${https[$variant]}" }
access_log: off
$store
routes:
  - host: bench.test
    upstream: 127.0.0.1:$up
    rate_limit: { rate: 1000000/s, burst: 1000000 }
  - host: keys.test
    upstream: 127.0.0.1:$up
    rate_limit: { rate: 1/h, burst: 1000, key: "header:X-Api-Key" }
YAML
  start_gateway "$work/$variant.yaml" "${https[$variant]}"
  gwpid[$variant]=$gw
done
cat >"$work/host.lua" <<'LUA'
wrk.headers["Host"] = "bench.test"
LUA
# wrk's latency lines ("50%  1.23ms") in microseconds.
percentile() {
  awk -v p="$1" '$1 == p {v = $2; u = 1
    if (v ~ /us$/) u = 1; else if (v ~ /ms$/) u = 1000; else if (v ~ /s$/) u = 1000000
    sub(/[a-z]+$/, "", v); printf "%.0f", v * u}' <<<"$2"
}
declare -A rps p50 p99 cpu rcpu
for r in $(seq "$rounds"); do
  order="local redis"; [ $((r % 2)) = 0 ] && order="redis local"
  for variant in $order; do
    before=$(cpu_ticks "${gwpid[$variant]}"); rbefore=$(cpu_ticks "$redis")
    out=$(wrk -t2 -c32 -d"${secs}s" --latency -s "$work/host.lua" "https://127.0.0.1:${https[$variant]}/")
    after=$(cpu_ticks "${gwpid[$variant]}"); rafter=$(cpu_ticks "$redis")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    rus=$(python3 -c "print(f'{($rafter - $rbefore) / $tick / $n * 1e6:.2f}')")
    rate=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    a=$(percentile 50% "$out"); b=$(percentile 99% "$out")
    us=$(python3 -c "print(f'{($after - $before) / $tick / $n * 1e6:.2f}')")
    echo "round $r $variant: $rate req/s, p50 ${a} us, p99 ${b} us, CPU per request: gateway $us us, redis $rus us"
    rps[$variant]+="$rate "; p50[$variant]+="$a "; p99[$variant]+="$b "; cpu[$variant]+="$us "; rcpu[$variant]+="$rus "
  done
done
# NOSCRIPT answers are expected once per request in flight when the scripts are first
# used (each then sends EVAL); anything else is a problem.
echo "redis errors during the run: $(redis-cli -p "$rport" info errorstats | grep errorstat | tr -d '\r' | tr '\n' ' ')"
grep -h limits_store "$work/gateway.log" | head -5 || true
python3 - "${rps[local]}" "${rps[redis]}" "${p50[local]}" "${p50[redis]}" \
  "${p99[local]}" "${p99[redis]}" "${cpu[local]}" "${cpu[redis]}" "${rcpu[redis]}" <<'PY'
import statistics, sys
l, r, l50, r50, l99, r99, lc, rc, rr = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:10])
print(f"median req/s: local {l:.0f}, redis {r:.0f}; redis/local = {r / l:.3f}")
print(f"median p50: local {l50:.0f} us, redis {r50:.0f} us; added {r50 - l50:.0f} us")
print(f"median p99: local {l99:.0f} us, redis {r99:.0f} us; added {r99 - l99:.0f} us")
print(f"median gateway CPU per request: local {lc:.2f} us, redis {rc:.2f} us (+{rc - lc:.2f}); redis-server's own: {rr:.2f} us")
PY

# Memory per client key: every request a new key (its bucket lives 1 h).
cat >"$work/keys.lua" <<'LUA'
wrk.headers["Host"] = "keys.test"
local n = 0
request = function()
  n = n + 1
  wrk.headers["X-Api-Key"] = string.format("key-%d-%d", math.random(1e9), n)
  return wrk.format(nil, "/")
end
LUA
redis-cli -p "$rport" flushall >/dev/null
mem() { redis-cli -p "$rport" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
m0=$(mem)
wrk -t2 -c32 -d"${key_secs}s" -s "$work/keys.lua" "https://127.0.0.1:${https[redis]}/" >/dev/null
m1=$(mem); keys=$(redis-cli -p "$rport" dbsize | tr -d '\r')
sample=$(redis-cli -p "$rport" randomkey | tr -d '\r')
echo "redis keys: $keys, used_memory +$((m1 - m0)) bytes: $(( (m1 - m0) / (keys > 0 ? keys : 1) )) bytes per client key"
echo "sample key: $sample ($(redis-cli -p "$rport" memory usage "$sample" | tr -d '\r') bytes by MEMORY USAGE)"
