#!/usr/bin/env bash
# First load of a real Streamlit page and a real Gradio page over a 10 Mbit/s link, in
# Chromium with a cold cache: through the gateway (compress on, the default), through
# the gateway with `compress: false` (the pages as the apps send them), and through
# nginx with `gzip on`. Bytes received and time until the app is usable, median of
# ROUNDS, the variants' order rotating from round to round.
#
#   bench/pageload.sh [ROUNDS]      (default 5; as root)
#
# Two network namespaces made here, joined by a veth pair with a tbf qdisc of 10 Mbit/s
# on each end (netem, for latency, is not available on these machines): the server side
# holds the apps (tests/e2e/apps, the e2e suite's Gradio 5 virtualenv), the gateway and
# nginx; Chromium (tests/e2e's playwright-core) loads the pages from the client side.
# Every process is stopped by its PID, then the namespaces are deleted.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
[ "$(id -u)" = 0 ] || { echo "run as root: it makes network namespaces"; exit 1; }
venv=tests/e2e/.venv
[ -x $venv/bin/streamlit ] && [ -d tests/e2e/node_modules/playwright-core ] \
  || { echo "needs the e2e suite's virtualenv and playwright-core: run tests/e2e/run once"; exit 1; }
command -v nginx >/dev/null || { echo "needs nginx: apt-get install -y nginx-light"; exit 1; }
cargo build --release -q

work=$(mktemp -d); chmod 755 "$work"
srv=gwpl-srv-$$ cli=gwpl-cli-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$srv"; ip netns add "$cli"
ip link add v-srv netns "$srv" type veth peer name v-cli netns "$cli"
ip -n "$srv" addr add 10.77.0.1/24 dev v-srv; ip -n "$cli" addr add 10.77.0.2/24 dev v-cli
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set v-srv up; ip -n "$cli" link set v-cli up
ip netns exec "$srv" tc qdisc add dev v-srv root tbf rate 10mbit burst 32kbit latency 400ms
ip netns exec "$cli" tc qdisc add dev v-cli root tbf rate 10mbit burst 32kbit latency 400ms
# (Background processes are started with `ip netns exec` itself, not a shell function,
# so that $! is the process's own PID.)
in_srv() { ip netns exec "$srv" "$@"; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench \
  -addext "subjectAltName=DNS:*.test" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
env=(GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 STREAMLIT_BROWSER_GATHER_USAGE_STATS=false)
ip netns exec "$srv" env "${env[@]}" PORT=7860 GRADIO_TEMP_DIR="$work/gradio-tmp" \
  $venv/bin/python tests/e2e/apps/gradio_app.py >"$work/gradio.log" 2>&1 & pids+=($!)
ip netns exec "$srv" env "${env[@]}" $venv/bin/python -m streamlit run tests/e2e/apps/streamlit_app.py \
  --server.address 127.0.0.1 --server.port 8501 --server.headless true \
  --browser.gatherUsageStats false >"$work/streamlit.log" 2>&1 & pids+=($!)

cat >"$work/routes.yaml" <<YAML
listen: { https: "10.77.0.1:8443", metrics: "127.0.0.1:9100" }
tls: { cert: $work/cert.pem, key: $work/key.pem }
state_dir: $work/state
access_log: off
routes:
  - { host: s.test, upstream: 127.0.0.1:8501 }
  - { host: g.test, upstream: 127.0.0.1:7860 }
  - { host: s-plain.test, upstream: 127.0.0.1:8501, compress: false }
  - { host: g-plain.test, upstream: 127.0.0.1:7860, compress: false }
YAML
ip netns exec "$srv" target/release/gateway run -c "$work/routes.yaml" >"$work/gateway.log" 2>&1 & pids+=($!)

# nginx as its users set it up for these apps: gzip on for the text types.
server() {
  cat <<NGINX
  server { listen 10.77.0.1:9443 ssl http2; server_name $1;
    ssl_certificate $work/cert.pem; ssl_certificate_key $work/key.pem;
    location / { proxy_pass http://127.0.0.1:$2; proxy_http_version 1.1;
      proxy_set_header Host \$http_host; proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade; proxy_read_timeout 1h; } }
NGINX
}
cat >"$work/nginx.conf" <<NGINX
worker_processes 2; daemon off; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 1024; }
http { access_log off;
  gzip on; gzip_types text/css text/plain text/javascript application/javascript application/json image/svg+xml;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
$(server s.test 8501)
$(server g.test 7860)
}
NGINX
ip netns exec "$srv" nginx -p "$work" -c nginx.conf >"$work/nginx.log" 2>&1 & pids+=($!)

ready() { # PORT ADDRESS SECONDS
  for _ in $(seq $(($3 * 10))); do
    in_srv bash -c "exec 3<>/dev/tcp/$2/$1" 2>/dev/null && return; sleep 0.1
  done
  echo "nothing on $2:$1 after $3 s"; tail -5 "$work"/*.log; exit 1
}
ready 8501 127.0.0.1 60; ready 7860 127.0.0.1 120; ready 8443 10.77.0.1 10; ready 9443 10.77.0.1 10

load() { # SCENARIO HOST PORT
  ip netns exec "$cli" env HOST_RULES="MAP *.test 10.77.0.1" \
    node bench/pageload.mjs "$1" "https://$2:$3/"
}
mkdir -p "$work/results"
variants=("gateway s.test 8443" "gateway-plain s-plain.test 8443" "nginx s.test 9443")
for app in streamlit gradio; do
  for r in $(seq "$rounds"); do
    # Each round starts with the next variant: none always goes first.
    for i in 0 1 2; do
      v=${variants[$(((r + i) % 3))]}
      read -r name host port <<<"$v"
      [ "$app" = gradio ] && host=g${host#s}
      line=$(load "$app" "$host" "$port")
      echo "$app round $r $name: $line"
      echo "$line" >>"$work/results/$app-$name.jsonl"
    done
  done
done
python3 - "$work/results" <<'PY'
import json, statistics, sys
from pathlib import Path

def runs(app, name):
    path = Path(sys.argv[1]) / f"{app}-{name}.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines() if l] if path.exists() else []

print("\n| app | through | bytes (median) | ms to usable (median, min–max) | vs nginx gzip |")
print("|---|---|---:|---:|---:|")
for app in ("streamlit", "gradio"):
    base = runs(app, "nginx")
    for name in ("gateway", "gateway-plain", "nginx"):
        rs = runs(app, name)
        if not rs:
            continue
        b = statistics.median(r["bytes"] for r in rs)
        ms = [r["ms"] for r in rs]
        ratio = ""
        if base:
            bb = statistics.median(r["bytes"] for r in base)
            bm = statistics.median(r["ms"] for r in base)
            ratio = f"{b / bb:.2f}× bytes, {statistics.median(ms) / bm:.2f}× time"
        print(f"| {app} | {name} | {b:,.0f} | {statistics.median(ms):.0f} "
              f"({min(ms)}–{max(ms)}) | {ratio} |")
PY
