#!/usr/bin/env bash
# Instructions per request of one or more gateway binaries, counted by valgrind's
# callgrind: unlike time, the count is the same from run to run whatever else the machine
# is doing, so a cost of a few hundred instructions shows (an A/B with wrk cannot see
# under ±5 %). Each binary serves 0 and then N keep-alive HTTP/1.1-over-TLS requests
# (Python's http.client) in front of an nginx upstream; the difference divided by N is
# the cost of one request, TLS record handling and all.
#
#   bench/instructions.sh [N] BIN...     (default N 2000)
#
# IR_ROUTE (YAML lines appended to the route, e.g. a `basic_auth:` block, or more routes),
# IR_HEADER (one `Name: value` field sent with every request), IR_PATH (the request
# path, default /) and IR_UPSTREAM (the route's `upstream`, default `127.0.0.1:UP`; `UP`
# and `UP2` name the two ports the nginx upstream listens on, e.g. `[127.0.0.1:UP,
# 127.0.0.1:UP2]` for a pool of two) measure a feature's cost. IR_ACCESS_LOG (default
# `off`; a file path turns the JSON access log on) and IR_METRICS (default `on`; `off`
# leaves the metrics listener out) switch the always-on features. IR_H2=1 sends the
# requests over one HTTP/2 connection, one at a time, with h2load (nghttp2-client). IR_KEEP=DIR keeps each
# callgrind profile there (callgrind.BIN.N) for `callgrind_annotate --inclusive=yes`.
# A binary named `bare-pingora` (target/release/examples/, the race's bare Pingora proxy)
# is run with its own command line in front of the same upstream; the IR_ settings other
# than IR_UPSTREAM (one address), IR_PATH, IR_HEADER and IR_H2 do not apply to it.
set -euo pipefail
n=2000
if [[ ${1:-} =~ ^[0-9]+$ ]]; then n=$1; shift; fi
bins=("$@")
[ ${#bins[@]} -gt 0 ] || { echo "usage: bench/instructions.sh [N] BIN..."; exit 2; }
for i in "${!bins[@]}"; do bins[$i]=$(realpath "${bins[$i]}"); done
source "$(dirname "$0")/lib.sh"
command -v valgrind >/dev/null || { echo "needs valgrind: apt-get install -y valgrind"; exit 1; }
if [ "${IR_H2:-0}" = 1 ] && ! command -v h2load >/dev/null; then
  echo "IR_H2=1 needs h2load: apt-get install -y nghttp2-client"; exit 1
fi
up=$(port)
up2=$(port)
start_upstream "$up" "$up2"
upstream=${IR_UPSTREAM:-127.0.0.1:UP}
upstream=${upstream//UP2/$up2}
upstream=${upstream//UP/$up}

# total_ir BIN REQUESTS: instructions the gateway executed from start to exit.
total_ir() {
  local https metrics out
  https=$(port); metrics=$(port); out="$work/callgrind.$RANDOM"
  cat >"$work/ir.yaml" <<YAML
listen: { https: "127.0.0.1:$https"$([ "${IR_METRICS:-on}" = on ] && echo ", metrics: \"127.0.0.1:$metrics\"") }
access_log: ${IR_ACCESS_LOG:-off}
threads: 1
upgrade_sock: $work/ir.sock
routes:
  - host: bench.test
    upstream: $upstream
${IR_ROUTE:-}
YAML
  if [ "$(basename "$1")" = bare-pingora ]; then
    # bench/bare_pingora.rs, the race's floor: its own command line, one thread.
    [ -f "$work/bare.pem" ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -days 30 -subj /CN=bench.test -keyout "$work/bare.key" -out "$work/bare.pem" 2>/dev/null
    RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" "$1" --threads 1 \
      --https "127.0.0.1:$https" --http "127.0.0.1:$(port)" --cert "$work/bare.pem" \
      --key "$work/bare.key" "bench.test=$upstream" >/dev/null 2>>"$work/valgrind.log" &
  else
    STATE_DIRECTORY="$work/state" RUST_LOG=error valgrind --tool=callgrind --callgrind-out-file="$out" \
      "$1" run -c "$work/ir.yaml" >/dev/null 2>>"$work/valgrind.log" &
  fi
  local pid=$!
  for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$https") 2>/dev/null && break; sleep 0.1; done
  if [ "${IR_H2:-0}" = 1 ]; then
    if [ "$2" -gt 0 ]; then
      h2load -n "$2" -c1 -m1 -H ':authority: bench.test' "https://127.0.0.1:$https${IR_PATH:-/}" >"$work/h2load.log" 2>&1
      grep -q " $2 succeeded" "$work/h2load.log" || { cat "$work/h2load.log" >&2; exit 1; }
    fi
  else
  python3 - "$https" "$2" "${IR_HEADER:-}" "${IR_PATH:-/}" <<'PY'
import http.client, ssl, sys
port, n, extra, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
headers = {"Host": "bench.test"}
if extra:
    name, value = extra.split(":", 1)
    headers[name.strip()] = value.strip()
ctx = ssl._create_unverified_context()
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
for _ in range(n):
    c.request("GET", path, headers=headers)
    r = c.getresponse(); r.read()
    assert r.status == 200, r.status
c.close()
PY
  fi
  kill -INT "$pid"
  wait "$pid" || true
  [ -z "${IR_KEEP:-}" ] || cp "$out" "$IR_KEEP/callgrind.$(basename "$1").$2"
  awk '/^summary:/ {print $2}' "$out"
}

for bin in "${bins[@]}"; do
  base=$(total_ir "$bin" 0)
  full=$(total_ir "$bin" "$n")
  echo "$bin: $(( (full - base) / n )) instructions per request ($n requests; start and stop: $base)"
done
