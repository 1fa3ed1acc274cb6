#!/usr/bin/env bash
# Rate-limit state under a flood of distinct clients, against the real binary.
#
# Every request carries a new random X-Api-Key, and the route keys its rate limit by
# that header: the worst case for the limiter's memory (each request is a new client).
# Prints requests sent and the gateway's RSS before and after.
#
#   bench/flood.sh [SECONDS]        (default 30; needs wrk and nginx-light)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs=${1:-30}
up=$(port); https=$(port)
start_upstream "$up"
mkdir -p "$work/certs"
cat >"$work/routes.yaml" <<YAML
listen: { https: "127.0.0.1:$https" }
access_log: off
routes:
  - host: flood.test
    upstream: 127.0.0.1:$up
    rate_limit: { rate: 1/m, burst: 5, key: "header:X-Api-Key" }
YAML
start_gateway "$work/routes.yaml" "$https"
cat >"$work/keys.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  wrk.headers["Host"] = "flood.test"
  wrk.headers["X-Api-Key"] = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  return wrk.format("GET", "/")
end
LUA
before=$(rss_kib "$gw")
wrk -t2 -c64 -d"${secs}s" -s "$work/keys.lua" "https://127.0.0.1:$https/" | tee "$work/wrk.txt"
after=$(rss_kib "$gw")
sent=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
echo "distinct keys sent: $sent; gateway RSS ${before} KiB -> ${after} KiB (+$(( (after - before) / 1024 )) MiB); key cap per route: 100000"
