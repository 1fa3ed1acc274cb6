#!/usr/bin/env bash
# The on-demand apps on a real GPU (issue 29, docs/on-demand.md): for a machine with an
# NVIDIA GPU and its driver, which the test suite cannot assume. Two apps each hold 60 %
# of device 0's memory for real (PyTorch allocates it on the GPU), so they cannot run
# together; traffic alternates between them under load and the gateway swaps them.
#
#   bench/gpu-check.sh [SWAPS]          (default 10; needs nvidia-smi, python3 with torch,
#                                        curl, and target/release/gateway or GATEWAY=BIN)
#
# Checks, and prints: every request answered 200 (none cut by a swap); never both apps'
# processes on the GPU at once (nvidia-smi, polled every 50 ms); each start waited for
# the driver to report the other app's memory free (the log's app_start after the
# previous app_stopped, and the measured memory under the budget); the gateway's
# measured memory metric (gateway_gpu_memory_bytes{kind="measured"}) present.
set -euo pipefail
swaps=${1:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
gateway=${GATEWAY:-$root/target/release/gateway}
command -v nvidia-smi >/dev/null || { echo "needs an NVIDIA GPU and its driver (nvidia-smi)"; exit 1; }
python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
  || { echo "needs PyTorch with CUDA: python3 -m pip install torch"; exit 1; }
[ -x "$gateway" ] || (cd "$root" && cargo build --release)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0)   # MiB
budget=$(( total * 90 / 100 ))
each=$(( budget * 60 / 100 ))
echo "device 0: ${total} MiB; budget ${budget} MiB; each app holds ${each} MiB"

cat >"$work/app.py" <<'PY'
import os, sys, time, torch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
name, port, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held = torch.empty(mib << 20, dtype=torch.uint8, device="cuda:0")
held.fill_(1)
torch.cuda.synchronize()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path.startswith("/slow"):
            time.sleep(2)
        body = f"{name} {held.numel() >> 20} MiB\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY

https=$(port); metrics=$(port); pa=$(port); pb=$(port)
cat >"$work/routes.yaml" <<YAML
listen: { https: "127.0.0.1:$https", metrics: "127.0.0.1:$metrics" }
access_log: $work/access.log
gpus:
  0: { memory: ${budget}MiB }
apps:
  a:
    run: [python3, $work/app.py, a, "$pa", "$each"]
    gpu: { device: 0, memory: ${each}MiB }
    start_timeout: 3m
  b:
    run: [python3, $work/app.py, b, "$pb", "$each"]
    gpu: { device: 0, memory: ${each}MiB }
    start_timeout: 3m
routes:
  - { host: a.gpu.test, upstream: "127.0.0.1:$pa", app: a }
  - { host: b.gpu.test, upstream: "127.0.0.1:$pb", app: b }
YAML
STATE_DIRECTORY="$work/state" RUST_LOG=info "$gateway" run -c "$work/routes.yaml" 2>"$work/gateway.log" &
gw=$!
pids+=("$gw")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$https") 2>/dev/null && break; sleep 0.1; done

# Both apps' processes on the GPU at once would be a failed swap.
(
  while kill -0 "$gw" 2>/dev/null; do
    n=$(nvidia-smi --query-compute-apps=pid --format=csv,noheader -i 0 | grep -c . || true)
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0)
    echo "$(date +%s.%N) $n $used"
    sleep 0.05
  done
) >"$work/gpu.log" &
pids+=("$!")

get() {
  curl -sk -o /dev/null -w '%{http_code}' --resolve "$1:$https:127.0.0.1" "https://$1:$https$2"
}
fail=0
started=$(date +%s)
for i in $(seq "$swaps"); do
  host=$([ $((i % 2)) = 1 ] && echo a.gpu.test || echo b.gpu.test)
  # A slow request in flight on the app about to be stopped, and steady load on it.
  other=$([ "$host" = a.gpu.test ] && echo b.gpu.test || echo a.gpu.test)
  slow=
  if [ "$i" -gt 1 ]; then
    (code=$(get "$other" /slow); [ "$code" = 200 ] || echo "cut: $other $code" >>"$work/failures") &
    slow=$!
  fi
  for _ in 1 2 3; do
    code=$(get "$host" /)
    [ "$code" = 200 ] || { echo "swap $i: $host $code" >>"$work/failures"; fail=1; }
  done
  [ -z "$slow" ] || wait "$slow"
done
took=$(( $(date +%s) - started ))
both=$(awk '$2 >= 2' "$work/gpu.log" | wc -l)
peak=$(awk 'BEGIN{m=0} $3>m{m=$3} END{print m}' "$work/gpu.log")
measured=$(curl -s "http://127.0.0.1:$metrics/metrics" | grep 'gateway_gpu_memory_bytes{device="0",kind="measured"}' || true)
stops=$(curl -s "http://127.0.0.1:$metrics/metrics" | grep -E 'gateway_app_stops_total\{app="[ab]",reason="room"\}' | awk '{s+=$2} END{print s+0}')
echo "swaps: $swaps in ${took} s; room stops: $stops; samples with both apps on the GPU: $both; peak used: ${peak} MiB of ${total}"
echo "measured metric: ${measured:-missing}"
grep -E 'event=(nvml_loaded|app_start |app_stopped|app_ready)' "$work/gateway.log" | tail -6
[ -f "$work/failures" ] && { echo "failed requests:"; cat "$work/failures"; fail=1; }
[ "$both" = 0 ] || fail=1
[ -n "$measured" ] || fail=1
[ "$fail" = 0 ] && echo "gpu-check: ok" || { echo "gpu-check: FAILED"; exit 1; }
