#!/usr/bin/env bash
# The gateway against nginx as the TLS reverse proxy, same machine, same run: both proxy
# to one nginx upstream answering "ok", both with 2 workers, TLS 1.3, keep-alive to the
# upstream, no access log. wrk drives alternating rounds; prints each round and the
# median ratio gateway/nginx of requests per second and of p99 latency.
#
#   bench/vs-nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS]   (default 6 rounds, 5 s, 32)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds=${1:-6}; secs=${2:-5}; conns=${3:-32}
up=$(port); gw_port=$(port); ngx_port=$(port); metrics=$(port)
start_upstream "$up"
mkdir -p "$work/certs"
cat >"$work/routes.yaml" <<YAML
listen: { https: "127.0.0.1:$gw_port", metrics: "127.0.0.1:$metrics" }
threads: 2
access_log: off
routes:
  - host: bench.test
    upstream: 127.0.0.1:$up
YAML
start_gateway "$work/routes.yaml" "$gw_port"   # also writes certs/selfsigned.pem
cat >"$work/proxy.conf" <<NGINX
worker_processes 2; daemon on; pid $work/proxy.pid; error_log $work/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$up; keepalive 64; }
  server {
    listen 127.0.0.1:$ngx_port ssl http2;
    server_name bench.test;
    ssl_certificate $work/certs/selfsigned.pem;
    ssl_certificate_key $work/certs/selfsigned.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
NGINX
nginx -p "$work" -c proxy.conf
pids+=("$(cat "$work/proxy.pid" 2>/dev/null || echo 0)")
trap 'nginx -p "$work" -c proxy.conf -s stop 2>/dev/null || true; cleanup' EXIT
cat >"$work/host.lua" <<'LUA'
wrk.headers["Host"] = "bench.test"
LUA
declare -A rps p99
for r in $(seq "$rounds"); do
  order="gateway nginx"; [ $((r % 2)) = 0 ] && order="nginx gateway"
  for who in $order; do
    p=$gw_port; [ "$who" = nginx ] && p=$ngx_port
    out=$(wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$work/host.lua" "https://127.0.0.1:$p/")
    r_s=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    lat=$(awk '$1 == "99%" {print $2}' <<<"$out")
    echo "round $r $who: $r_s req/s, p99 $lat"
    rps[$who]+="$r_s "
    p99[$who]+="$lat "
  done
done
python3 - "${rps[gateway]}" "${rps[nginx]}" "${p99[gateway]}" "${p99[nginx]}" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)
g, n = (statistics.median(float(x) for x in a.split()) for a in sys.argv[1:3])
gl, nl = (statistics.median(ms(x) for x in a.split()) for a in sys.argv[3:5])
print(f"median req/s: gateway {g:.0f}, nginx {n:.0f}; gateway/nginx = {g / n:.2f}")
print(f"median p99: gateway {gl:.2f} ms, nginx {nl:.2f} ms; gateway/nginx = {gl / nl:.2f}")
PY
