#!/usr/bin/env bash
# Rate-limit state under a flood of distinct clients, against the real binary.
#
# Every request carries a new random X-Api-Key, and the route keys its rate limit by
# that header: the worst case for the limiter's memory (each request is a new client).
# Prints requests sent, keys the gateway could have remembered, and its RSS before and
# after. Needs wrk and nginx (apt-get install wrk nginx-light), a release build.
#
#   bench/flood.sh [SECONDS]        (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release -q
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(port); https=$(port)

cat >"$work/nginx.conf" <<NGINX
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/error.log;
events { worker_connections 1024; }
http { access_log off;
  server { listen 127.0.0.1:$up; location / { return 200 "ok\n"; } } }
NGINX
nginx -p "$work" -c nginx.conf

mkdir -p "$work/certs"
cat >"$work/routes.yaml" <<YAML
listen: { https: "127.0.0.1:$https" }
routes:
  - host: flood.test
    upstream: 127.0.0.1:$up
    rate_limit: { rate: 1/m, burst: 5, key: "header:X-Api-Key" }
YAML
RUST_LOG=warn target/release/gateway run -c "$work/routes.yaml" 2>"$work/gateway.log" &
gw=$!
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$https) 2>/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2}' /proc/$gw/status; }

cat >"$work/keys.lua" <<'LUA'
math.randomseed(os.time())
request = function()
  wrk.headers["Host"] = "flood.test"
  wrk.headers["X-Api-Key"] = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  return wrk.format("GET", "/")
end
LUA
before=$(rss)
wrk -t2 -c64 -d"${secs}s" -s "$work/keys.lua" "https://127.0.0.1:$https/" | tee "$work/wrk.txt"
after=$(rss)
sent=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
echo "distinct keys sent: $sent; gateway RSS ${before} KiB -> ${after} KiB (+$(( (after - before) / 1024 )) MiB); key cap per route: 100000"
