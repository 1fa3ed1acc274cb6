# Shared helpers of the bench scripts: an nginx upstream answering 200, free ports,
# starting a gateway on a routes.yaml. Source it after `set -euo pipefail`.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  nginx -p "$work" -c nginx.conf -s stop 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "needs $tool: apt-get install -y wrk nginx-light"; exit 1; }
done
cargo build --release -q

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_upstream PORT [PORT2]: nginx answering "ok" to everything (on PORT2 too: two
# "replicas" for a pool), /page.html: 64 KiB of HTML, a page to compress, and /1k: the
# race's 1 KiB answer.
start_upstream() {
  local also=""
  [ -n "${2:-}" ] && also="listen 127.0.0.1:$2;"
  mkdir -p "$work/www"
  chmod 755 "$work" "$work/www"   # nginx's workers run as another user
  python3 -c 'import sys
rows = "".join(f"<p class=\"row\">row {i} of the table</p>\n" for i in range(1800))
sys.stdout.write(("<!doctype html><html><body>" + rows + "</body></html>")[:65536])' >"$work/www/page.html"
  head -c 1024 /dev/zero | tr '\0' x >"$work/www/1k"
  cat >"$work/nginx.conf" <<NGINX
worker_processes 1; daemon on; pid $work/nginx.pid; error_log $work/nginx-error.log;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$1; $also location / { return 200 "ok\n"; }
    location = /page.html { root $work/www; } location = /1k { root $work/www; } } }
NGINX
  nginx -p "$work" -c nginx.conf
}

# start_gateway CONFIG HTTPS_PORT [BINARY]: runs BINARY (target/release/gateway by
# default), waits for the port, sets $gw to its pid.
start_gateway() {
  STATE_DIRECTORY="$work/state" RUST_LOG=warn "${3:-target/release/gateway}" run -c "$1" >/dev/null 2>>"$work/gateway.log" &
  gw=$!
  pids+=("$gw")
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return; sleep 0.1; done
  echo "gateway did not start: $(cat "$work/gateway.log")"; exit 1
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# CPU time (user + system) of a process, in clock ticks of $tick per second.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
