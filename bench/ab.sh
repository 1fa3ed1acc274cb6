#!/usr/bin/env bash
# A/B of two gateway binaries (e.g. before and after a change on the request path), same
# routes.yaml, same nginx upstream, alternating rounds in one run. Prints each round's
# requests per second and the gateway's CPU time per request (from /proc: far less noisy
# than throughput on a shared 2-core machine), then the median ratios B/A.
#
#   bench/ab.sh A_BIN B_BIN [ROUNDS] [SECONDS] [MODE] [EXTRA_ROUTE_YAML]
#
# MODE keepalive (default): 32 keep-alive connections, HTTP/1.1 over TLS.
# MODE handshake: every request on a new connection (`Connection: close`): a full TLS
#   handshake per request, what a crowd of new visitors costs.
# MODE h2: HTTP/2 with h2load, 32 connections of 10 streams each (nghttp2-client).
# EXTRA_ROUTE_YAML is appended to the route (e.g. '    rate_limit: { rate: 1000000/s }').
# AB_PATH (default /: a 3-byte answer; /1k: the race's 1 KiB) and AB_ACCEPT_ENCODING (default none) in the
# environment: e.g. AB_PATH=/page.html AB_ACCEPT_ENCODING=gzip for the cost of a 64 KiB
# page compressed (keepalive and handshake modes). AB_ACCESS_LOG=on writes each side's
# JSON access log to a file (default off).
#
# Build A from an older commit with a worktree sharing the target directory, e.g.:
#   git worktree add /tmp/base HEAD~1 && (cd /tmp/base && CARGO_TARGET_DIR=$PWD/../main/target \
#     cargo build --release) && cp target/release/gateway /tmp/gateway-base
set -euo pipefail
a_bin=$(realpath "$1"); b_bin=$(realpath "$2")
source "$(dirname "$0")/lib.sh"
rounds=${3:-6}; secs=${4:-5}; mode=${5:-keepalive}; extra=${6:-}
if [ "$mode" = h2 ] && ! command -v h2load >/dev/null; then
  echo "MODE h2 needs h2load: apt-get install -y nghttp2-client"; exit 1
fi
up=$(port)
start_upstream "$up"
mkdir -p "$work/certs"
declare -A https gwpid bin=([A]=$a_bin [B]=$b_bin)
for side in A B; do
  https[$side]=$(port)
  cat >"$work/$side.yaml" <<YAML
listen: { https: "127.0.0.1:${https[$side]}", metrics: "127.0.0.1:$(port)" }
access_log: $([ "${AB_ACCESS_LOG:-off}" = on ] && echo "$work/$side-access.log" || echo off)
threads: 2
upgrade_sock: $work/$side.sock
routes:
  - host: bench.test
    upstream: 127.0.0.1:$up
$extra
YAML
  start_gateway "$work/$side.yaml" "${https[$side]}" "${bin[$side]}"
  gwpid[$side]=$gw
done
path=${AB_PATH:-/}
printf 'wrk.headers["Host"] = "bench.test"\n' >"$work/req.lua"
if [ -n "${AB_ACCEPT_ENCODING:-}" ]; then
  printf 'wrk.headers["Accept-Encoding"] = "%s"\n' "$AB_ACCEPT_ENCODING" >>"$work/req.lua"
fi
if [ "$mode" = handshake ]; then
  printf 'wrk.headers["Connection"] = "close"\n' >>"$work/req.lua"
  conns=8
else
  conns=32
fi
declare -A rps cpu
for r in $(seq "$rounds"); do
  order="A B"; [ $((r % 2)) = 0 ] && order="B A"
  for side in $order; do
    before=$(cpu_ticks "${gwpid[$side]}")
    if [ "$mode" = h2 ]; then
      out=$(h2load -c32 -m10 -t2 -D "$secs" -H ':authority: bench.test' "https://127.0.0.1:${https[$side]}/" 2>&1)
      after=$(cpu_ticks "${gwpid[$side]}")
      r_s=$(awk '/^finished in/ {print $4}' <<<"$out")
      n=$(awk '/^requests:/ {print $8}' <<<"$out")
    else
      out=$(wrk -t2 -c"$conns" -d"${secs}s" -s "$work/req.lua" "https://127.0.0.1:${https[$side]}$path")
      after=$(cpu_ticks "${gwpid[$side]}")
      r_s=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
      n=$(awk '/requests in/ {print $1}' <<<"$out")
    fi
    us=$(python3 -c "print(f'{($after - $before) / $tick / max($n, 1) * 1e6:.2f}')")
    echo "round $r $side: $r_s req/s, gateway CPU $us us/request"
    rps[$side]+="$r_s "
    cpu[$side]+="$us "
  done
done
python3 - "${rps[A]}" "${rps[B]}" "${cpu[A]}" "${cpu[B]}" "$mode" <<'PY'
import statistics, sys
a, b, ca, cb = (statistics.median(float(x) for x in v.split()) for v in sys.argv[1:5])
print(f"{sys.argv[5]}: median req/s A {a:.0f}, B {b:.0f}; B/A = {b / a:.3f}")
print(f"{sys.argv[5]}: median gateway CPU per request A {ca:.1f} us, B {cb:.1f} us; B/A = {cb / ca:.3f}")
PY
