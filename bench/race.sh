#!/usr/bin/env bash
# The race: the gateway against nginx and the other Pingora-based proxies, on every axis
# users feel, in one run on one machine. docs/performance.md holds the latest table.
#
#   bench/race.sh [--quick] [--no-pingap] [--rounds N] [--secs S] [--only ROWS] [--out FILE]
#
# Proxies, all in front of the same two upstreams (nginx serving static 1 KiB, 100 KiB
# and 10 MiB files; `bench-load upstream` for WebSockets, SSE and uploads):
#   gateway  the release build, every feature on: TLS, metrics, JSON access log to a
#            file, a rate limit on every route (never reached), the security headers
#   nginx    Debian's, configured the same way: same routes, TLS 1.2/1.3, keep-alive to
#            the upstreams, proxy_buffering off, the same headers, a buffered access log
#            and a limit_req never reached, one worker per core
#   bare     a bare Pingora 0.9 proxy (bench/bare_pingora.rs): host match and
#            forwarded headers, nothing else, Pingora's defaults
#   pingap   pingap 0.13.1 (Pingora 0.8), built once from crates.io into
#            ~/.cache/gateway-bench (`--no-pingap` skips it), no access log
# Every proxy runs 2 workers (threads or processes) and none is pinned: the proxies,
# the load generators and the upstreams share the machine's cores the same way for
# every proxy. Rounds alternate the proxies (each round starts with the next one) so
# that machine drift cancels; each figure is the median of the rounds, with its range.
#
# --quick: the headline rows (HTTP/1.1 TLS, HTTP/2, full and resumed handshakes, idle connection
# memory), 2 rounds of 4 s: about 2 minutes after the builds. Full run: 3 rounds of 5 s, about 15.
# --only 6,8: only those rows of the full run (to settle one figure again).
# Row 9 is compression: bare Pingora and pingap (no plugin configured) send the page as
# the app wrote it, so their MB/s is not comparable; what it shows is the CPU per page.
set -euo pipefail
command_line="bench/race.sh $*"
quick=0; with_pingap=1; rounds=""; secs=""; out=""; only=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --no-pingap) with_pingap=0 ;;
    --rounds) rounds=$2; shift ;;
    --secs) secs=$2; shift ;;
    --out) out=$(realpath -m "$2"); shift ;;
    --only) only=$2; shift ;;
    *) sed -n '2,28p' "$0"; exit 2 ;;
  esac
  shift
done
[ $quick = 1 ] && { rounds=${rounds:-2}; secs=${secs:-4}; }
rounds=${rounds:-3}; secs=${secs:-5}; rounds_asked=$rounds

# What the run needs, from Debian's packages (root or sudo).
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v cmake >/dev/null || need+=(cmake)
[ $with_pingap = 1 ] && ! command -v protoc >/dev/null && need+=(protobuf-compiler)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
source "$(dirname "$0")/lib.sh"   # cd to the repo, builds the gateway, $work, port()
cargo build --release -q --example bare-pingora --example bench-load
load=target/release/examples/bench-load
pingap_bin=$HOME/.cache/gateway-bench/pingap/bin/pingap
if [ $with_pingap = 1 ] && [ ! -x "$pingap_bin" ]; then
  echo "building pingap 0.13.1 into ~/.cache/gateway-bench (once, about 15 minutes)"
  cargo install -q pingap --version 0.13.1 --locked --root "$HOME/.cache/gateway-bench/pingap" \
    --target-dir "$HOME/.cache/gateway-bench/pingap-target"
fi
# 10,000 WebSockets take 20,000 descriptors in one Pingora process (client and upstream
# side); where the hard limit is lower (20,000 in some containers), as many as fit.
ulimit -n "$(ulimit -Hn)"
many_ws=$(( $(ulimit -n) >= 21000 ? 10000 : ($(ulimit -n) - 1000) / 2 ))
proxies=(gateway nginx bare); [ $with_pingap = 1 ] && proxies+=(pingap)
started=$(date +%s)

# --- the upstreams ---------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=bench.test \
  -addext "subjectAltName=DNS:bench.test,DNS:live.test" \
  -keyout "$work/bench.key" -out "$work/bench.pem" 2>/dev/null
mkdir -p "$work/www" "$work/logs"
chmod 755 "$work"   # nginx's workers run as another user
head -c 1024 /dev/zero | tr '\0' x >"$work/www/1k"
head -c 102400 /dev/zero >"$work/www/100k"
head -c 10485760 /dev/zero >"$work/www/10m"
truncate -s 1G "$work/1g"
python3 -c 'import sys
rows = "".join(f"<p class=\"row\">row {i} of the table</p>\n" for i in range(1800))
sys.stdout.write(("<!doctype html><html><body>" + rows + "</body></html>")[:65536])' >"$work/www/page.html"
up1=$(port); up2=$(port)
cat >"$work/upstream.conf" <<NGINX
worker_processes 1; daemon off; pid $work/upstream.pid; error_log $work/logs/upstream-error.log;
worker_rlimit_nofile 65536;
events { worker_connections 16384; }
http { access_log off; sendfile on; tcp_nopush on; open_file_cache max=16; keepalive_requests 1000000;
  server { listen 127.0.0.1:$up1 backlog=4096; root $work/www; location = / { try_files /1k =404; } } }
NGINX
nginx -p "$work" -c upstream.conf & pids+=($!)
$load upstream "127.0.0.1:$up2" 200 & pids+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$up1") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$up2") 2>/dev/null && break
  sleep 0.1
done

# --- the proxies -----------------------------------------------------------------------
declare -A tls_port plain_port pid
for p in "${proxies[@]}" gateway-off; do tls_port[$p]=$(port); plain_port[$p]=$(port); done

gateway_yaml() { # NAME FEATURES(on|off)
  local name=$1
  {
    echo "listen: { https: \"127.0.0.1:${tls_port[$name]}\", http: \"127.0.0.1:${plain_port[$name]}\", http_mode: proxy$([ "$2" = on ] && echo ", metrics: \"127.0.0.1:$(port)\"") }"
    echo "threads: 2"
    echo "upgrade_sock: $work/$name.sock"
    echo "tls: { cert: $work/bench.pem, key: $work/bench.key }"
    # Every client of the race is 127.0.0.1, and rows 6 and 7 hold up to 10,000
    # connections: caps above that, still counted (the default per-client cap is 256).
    echo "limits: { max_connections: 19500, max_connections_per_client: 19000 }"
    if [ "$2" = on ]; then
      echo "access_log: $work/logs/$name-access.log"
      echo "defaults: { rate_limit: { rate: 1000000/s, burst: 1000000 } }"
    else
      echo "access_log: off"
      echo "defaults: { headers: {} }"
    fi
    echo "routes:"
    echo "  - { host: bench.test, upstream: 127.0.0.1:$up1 }"
    echo "  - { host: live.test, upstream: 127.0.0.1:$up2, max_body: off }"
  } >"$work/$name.yaml"
}
gateway_yaml gateway on
gateway_yaml gateway-off off

cat >"$work/nginx.conf" <<NGINX
worker_processes 2; daemon off; pid $work/nginx.pid; error_log $work/logs/nginx-error.log;
worker_rlimit_nofile 65536;
events { worker_connections 32768; }
http {
  access_log $work/logs/nginx-access.log combined buffer=64k;
  limit_req_zone \$binary_remote_addr zone=perclient:10m rate=1000000r/s;
  limit_req zone=perclient burst=1000000 nodelay;
  upstream up1 { server 127.0.0.1:$up1; keepalive 128; }
  upstream up2 { server 127.0.0.1:$up2; keepalive 128; }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' ''; }
  map \$scheme \$hsts { https "max-age=31536000"; default ""; }
  keepalive_timeout 75s; keepalive_requests 1000000;
  client_max_body_size 0; proxy_buffering off; proxy_request_buffering off;
  proxy_http_version 1.1;
  proxy_read_timeout 1h; proxy_send_timeout 1h;
  proxy_set_header Host \$http_host;
  proxy_set_header Upgrade \$http_upgrade;
  proxy_set_header Connection \$connection_upgrade;
  proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto \$scheme;
  proxy_set_header X-Real-IP \$remote_addr;
  add_header Strict-Transport-Security \$hsts always;
  add_header X-Frame-Options SAMEORIGIN always;
  add_header X-Content-Type-Options nosniff always;
  gzip on; gzip_types text/css application/javascript application/json image/svg+xml text/plain;
  ssl_certificate $work/bench.pem; ssl_certificate_key $work/bench.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  server { listen 127.0.0.1:${tls_port[nginx]} ssl http2 backlog=4096; listen 127.0.0.1:${plain_port[nginx]} backlog=4096;
    server_name bench.test; location / { proxy_pass http://up1; } }
  server { listen 127.0.0.1:${tls_port[nginx]} ssl http2; listen 127.0.0.1:${plain_port[nginx]};
    server_name live.test; location / { proxy_pass http://up2; } }
}
NGINX

cat >"$work/pingap.toml" <<TOML
[basic]
name = "race"
log_level = "WARN"
threads = 2
grace_period = "1s"
graceful_shutdown_timeout = "1s"
pid_file = "$work/pingap.pid"
upgrade_sock = "$work/pingap.sock"
[certificates.bench]
tls_cert = "$work/bench.pem"
tls_key = "$work/bench.key"
domains = "bench.test,live.test"
is_default = true
[upstreams.up1]
addrs = ["127.0.0.1:$up1"]
[upstreams.up2]
addrs = ["127.0.0.1:$up2"]
[locations.bench]
host = "bench.test"
upstream = "up1"
enable_reverse_proxy_headers = true
[locations.live]
host = "live.test"
upstream = "up2"
enable_reverse_proxy_headers = true
[servers.tls]
addr = "127.0.0.1:${tls_port[pingap]:-0}"
locations = ["bench", "live"]
global_certificates = true
enabled_h2 = true
tls_min_version = "TLSv1.2"
[servers.plain]
addr = "127.0.0.1:${plain_port[pingap]:-0}"
locations = ["bench", "live"]
TOML

start_proxy() { # NAME
  local p=$1
  case $p in
    gateway|gateway-off) STATE_DIRECTORY="$work/state" RUST_LOG=warn target/release/gateway run -c "$work/$p.yaml" >/dev/null 2>>"$work/logs/$p.log" & ;;
    nginx) nginx -p "$work" -c nginx.conf 2>>"$work/logs/nginx.log" & ;;
    bare) RUST_LOG=warn target/release/examples/bare-pingora --threads 2 --https "127.0.0.1:${tls_port[bare]}" \
            --http "127.0.0.1:${plain_port[bare]}" --cert "$work/bench.pem" --key "$work/bench.key" \
            "bench.test=127.0.0.1:$up1" "live.test=127.0.0.1:$up2" >/dev/null 2>>"$work/logs/bare.log" & ;;
    pingap) env -u RUST_LOG PINGAP_DISABLE_ACME=1 "$pingap_bin" -c "$work/pingap.toml" --threads 2 \
            >>"$work/logs/pingap.log" 2>&1 & ;;
  esac
  pid[$p]=$!
  pids+=("${pid[$p]}")
  for _ in $(seq 150); do
    if curl -sk -o /dev/null --resolve "bench.test:${tls_port[$p]}:127.0.0.1" "https://bench.test:${tls_port[$p]}/" \
      && curl -s -o /dev/null -H 'Host: bench.test' "http://127.0.0.1:${plain_port[$p]}/"; then
      return
    fi
    sleep 0.1
  done
  echo "$p did not start:"; tail -5 "$work/logs/$p.log" 2>/dev/null; exit 1
}
stop_proxy() { # NAME: SIGINT (fast stop for all four), then wait for it to go
  local p=$1
  kill -INT "${pid[$p]}" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "${pid[$p]}" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "${pid[$p]}" 2>/dev/null || true
  wait "${pid[$p]}" 2>/dev/null || true
}
restart_proxy() { stop_proxy "$1"; start_proxy "$1"; }
procs() { echo "${pid[$1]}" $(pgrep -P "${pid[$1]}" || true); }
# CPU seconds ×100 (clock ticks) of a proxy's processes; memory in KiB.
cpu_of() { local t=0; for q in $(procs "$1"); do t=$((t + $(cpu_ticks "$q"))); done; echo $t; }
pss_of() { local t=0; for q in $(procs "$1"); do t=$((t + $(awk '/^Pss:/ {print $2}' "/proc/$q/smaps_rollup"))); done; echo $t; }
hwm_of() { local t=0; for q in $(procs "$1"); do t=$((t + $(awk '/VmHWM/ {print $2}' "/proc/$q/status"))); done; echo $t; }

results=$work/results.tsv
: >"$results"
record() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$results"; }
# The proxies in the order of round R: each round starts with the next one.
order() { local n=${#list[@]}; for i in $(seq 0 $((n - 1))); do echo "${list[$(( (i + $1) % n ))]}"; done; }
per_req_us() { python3 -c "print(f'{($2 - $1) / $tick / max($3, 1) * 1e6:.1f}')"; }

printf 'wrk.headers["Host"] = "bench.test"\n' >"$work/host.lua"
# Row 9: what Chrome and Firefox send (the gateway picks zstd, nginx gzip, level 1).
printf 'wrk.headers["Host"] = "bench.test"\nwrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"\n' \
  >"$work/browser.lua"
wrk_row() { # PROXY ROW SCHEME CONNECTIONS PATH [WRK_LUA]
  local p=$1 row=$2 port=${tls_port[$1]}
  [ "$3" = http ] && port=${plain_port[$p]}
  local c0 c1 o
  c0=$(cpu_of "$p")
  o=$(wrk -t2 -c"$4" -d"${secs}s" --latency -s "${6:-$work/host.lua}" "$3://127.0.0.1:$port$5")
  c1=$(cpu_of "$p")
  local n rps bad
  n=$(awk '/requests in/ {print $1}' <<<"$o"); rps=$(awk '/Requests\/sec/ {print $2}' <<<"$o")
  bad=$(awk '/Non-2xx/ {s += $5} /Socket errors/ {gsub(",", ""); s += $4 + $6 + $8 + $10} END {print s + 0}' <<<"$o")
  record "$row" "$p" "req/s" "$rps"
  record "$row" "$p" "p50 ms" "$(awk '$1 == "50%" {print $2}' <<<"$o")"
  record "$row" "$p" "p99 ms" "$(awk '$1 == "99%" {print $2}' <<<"$o")"
  record "$row" "$p" "MB/s" "$(awk '/Transfer\/sec/ {print $2}' <<<"$o")"
  record "$row" "$p" "CPU µs/req" "$(per_req_us "$c0" "$c1" "$n")"
  [ "${bad:-0}" = 0 ] || record "$row" "$p" "errors" "$bad"
  echo "  $row $p: $rps req/s$([ "${bad:-0}" = 0 ] || echo " (errors $bad)")"
}
h2_row() { # PROXY ROW
  local p=$1 c0 c1 o
  c0=$(cpu_of "$p")
  o=$(h2load -c32 -m10 -t2 -D "$secs" -H ':authority: bench.test' "https://127.0.0.1:${tls_port[$p]}/" 2>&1)
  c1=$(cpu_of "$p")
  local rps n failed
  rps=$(awk '/^finished in/ {print $4}' <<<"$o"); n=$(awk '/^requests:/ {print $6}' <<<"$o")
  failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$o")
  record "$2" "$p" "req/s" "$rps"
  record "$2" "$p" "mean ms" "$(awk '/^time for request:/ {print $6}' <<<"$o")"
  record "$2" "$p" "CPU µs/req" "$(per_req_us "$c0" "$c1" "${n:-0}")"
  [ "${failed:-0}" = 0 ] || record "$2" "$p" "errors" "$failed"
  echo "  $2 $p: $rps req/s"
}
handshake_row() { # PROXY ROW [resume]
  local p=$1 c0 c1 o
  c0=$(cpu_of "$p")
  o=$($load handshakes "127.0.0.1:${tls_port[$p]}" bench.test 8 "$secs" ${3:-})
  c1=$(cpu_of "$p")
  local n
  n=$(awk '{print $2}' <<<"$o")
  record "$2" "$p" "conn/s" "$(awk '{print $4}' <<<"$o")"
  record "$2" "$p" "CPU µs/conn" "$(per_req_us "$c0" "$c1" "$n")"
  [ -z "${3:-}" ] || record "$2" "$p" "resumed %" "$(awk '{printf "%.0f", $2 ? 100 * $8 / $2 : 0}' <<<"$o")"
  [ "$(awk '{print $6}' <<<"$o")" = 0 ] || record "$2" "$p" "errors" "$(awk '{print $6}' <<<"$o")"
  echo "  $2 $p: $o"
}
upload_row() { # PROXY ROW length|chunked
  local p=$1 before o extra=()
  restart_proxy "$p"
  [ "$3" = chunked ] && extra=(-H 'Transfer-Encoding: chunked')
  before=$(pss_of "$p")
  o=$(curl -sk -X POST -T "$work/1g" "${extra[@]}" -H 'Expect:' -o "$work/upload.out" -w '%{time_total} %{http_code}' \
    --resolve "live.test:${tls_port[$p]}:127.0.0.1" "https://live.test:${tls_port[$p]}/upload")
  if [ "$(cut -d' ' -f2 <<<"$o")" != 200 ] || [ "$(cat "$work/upload.out")" != 1073741824 ]; then
    record "$2" "$p" "errors" 1
  fi
  record "$2" "$p" "seconds" "$(cut -d' ' -f1 <<<"$o")"
  record "$2" "$p" "peak RSS growth MB" "$(( ($(hwm_of "$p") - before) / 1024 ))"
  echo "  $2 $p: $o"
}
hold_row() { # PROXY ROW COUNT idle|ws: PSS with COUNT connections held, per connection
  local p=$1 idle out hp
  restart_proxy "$p"
  idle=$(pss_of "$p")
  out=$work/hold.out; : >"$out"
  $load hold "127.0.0.1:${tls_port[$p]}" "$([ "$4" = ws ] && echo live.test || echo bench.test)" "$3" "$4" >"$out" 2>>"$work/logs/hold.log" &
  hp=$!; pids+=($hp)
  for _ in $(seq 1200); do grep -q held "$out" && break; kill -0 $hp 2>/dev/null || break; sleep 0.1; done
  # The proxy may still be finishing the last connections: wait (bounded) until its PSS
  # stops growing.
  local now failed prev=0
  now=$(pss_of "$p")
  for _ in $(seq 20); do
    [ $(( now - prev )) -le $(( now / 200 )) ] && break
    prev=$now; sleep 0.2; now=$(pss_of "$p")
  done
  failed=$(awk '{print $4}' "$out")
  kill $hp 2>/dev/null || true; wait $hp 2>/dev/null || true
  record "$2" "$p" "MiB" "$(( now / 1024 ))"
  record "$2" "$p" "KiB per connection" "$(python3 -c "print(f'{($now - $idle) / $3:.1f}')")"
  [ "${failed:-x}" = 0 ] || record "$2" "$p" "errors" "${failed:-all}"
  echo "  $2 $p: $(cat "$out"), PSS $((idle / 1024)) -> $((now / 1024)) MiB"
}
sse_row() { # PROXY|direct ROW
  local o
  if [ "$1" = direct ]; then
    o=$($load sse "127.0.0.1:$up2" live.test 1000 "$((secs * 2))" plain)
  else
    o=$($load sse "127.0.0.1:${tls_port[$1]}" live.test 1000 "$((secs * 2))")
  fi
  record "$2" "$1" "p50 µs" "$(awk '{print $4}' <<<"$o")"
  record "$2" "$1" "p99 µs" "$(awk '{print $6}' <<<"$o")"
  echo "  $2 $1: $o"
}
wants() { [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]; } # ROW NUMBER: asked for?
race() { # ROW FUNCTION ARGS...: every proxy, alternating, $rounds times
  local row=$1 fn=$2; shift 2
  wants "${row%%.*}" || return 0
  echo "$row"
  for r in $(seq "$rounds"); do for p in $(order "$r"); do "$fn" "$p" "$row" "$@"; done; done
}

for p in "${proxies[@]}"; do start_proxy "$p"; done
list=("${proxies[@]}")
echo "idle: $(for p in "${proxies[@]}"; do echo -n "$p $(( $(pss_of "$p") / 1024 )) MiB  "; done)"
for p in "${proxies[@]}"; do record "6. memory idle" "$p" "MiB" "$(( $(pss_of "$p") / 1024 ))"; done

race "1. HTTP/1.1 TLS, 1 KiB, 32 conns" wrk_row https 32 /
race "2. HTTP/2 TLS, 1 KiB, 32 conns x 10 streams" h2_row
race "3. new TLS connections, full handshake" handshake_row
race "3. new TLS connections, resumed session (TLS 1.3 ticket)" handshake_row resume
if [ $quick = 0 ]; then
  race "1. HTTP/1.1 TLS, 1 KiB, 256 conns" wrk_row https 256 /
  race "1. HTTP/1.1 plain, 1 KiB, 32 conns" wrk_row http 32 /
  race "1. HTTP/1.1 plain, 1 KiB, 256 conns" wrk_row http 256 /
  race "4. 100 KiB responses, TLS, 8 conns" wrk_row https 8 /100k
  race "4. 10 MiB responses, TLS, 4 conns" wrk_row https 4 /10m
  race "9. 64 KiB HTML page, a browser's Accept-Encoding (compressed by the gateway and nginx, not by bare and pingap), TLS, 8 conns" \
    wrk_row https 8 /page.html "$work/browser.lua"
  rounds_saved=$rounds; rounds=1
  list=(direct "${proxies[@]}")
  race "7. SSE, 1,000 streams, an event each 200 ms per stream" sse_row
  list=("${proxies[@]}")
  race "5. 1 GiB upload, Content-Length" upload_row length
  race "5. 1 GiB upload, chunked" upload_row chunked
  race "6. 1,000 idle keep-alive TLS connections" hold_row 1000 idle
  race "6. 10,000 idle keep-alive TLS connections" hold_row 10000 idle
  race "6. 1,000 WebSockets" hold_row 1000 ws
  race "6. $(printf "%'d" "$many_ws") WebSockets" hold_row "$many_ws" ws
  rounds=$rounds_saved
  # 8. What the gateway's features cost: the same binary with them all off, both fresh
  # (a process that has just held thousands of WebSockets runs slower for a while:
  # docs/performance.md).
  if wants 8; then restart_proxy gateway; start_proxy gateway-off; fi
  list=(gateway gateway-off)
  race "8. features on (gateway) vs off (gateway-off), HTTP/1.1 TLS, 32 conns" wrk_row https 32 /
else
  rounds=1
  race "6. 1,000 idle keep-alive TLS connections" hold_row 1000 idle
fi

# --- the table -------------------------------------------------------------------------
{
  echo "## Race: $(date -u +%Y-%m-%d), $(( ($(date +%s) - started) / 60 )) min, $( [ $quick = 1 ] && echo quick || echo full) run"
  echo
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(uname -r), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "- gateway $(git rev-parse --short HEAD) (release, fat LTO); $(nginx -v 2>&1 | sed 's/.*: //'); bare Pingora 0.9.1$([ $with_pingap = 1 ] && echo "; pingap 0.13.1 (Pingora 0.8.0)"); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); h2load $(h2load --version | awk '{print $2}')"
  echo "- sharing: every proxy 2 workers, unpinned; wrk and h2load 2 threads; upstreams nginx (1 worker) and bench-load (1 thread); all on the same $(nproc) cores"
  [ -z "$only" ] || echo "- rows $only only"
  echo "- $rounds_asked rounds of ${secs} s (memory, uploads and SSE: one), proxies alternating; median [min–max]; **ratio** = proxy / nginx"
  echo "- command: $command_line"
  echo
  python3 - "$results" "${proxies[*]}" <<'PY'
import collections, statistics, sys
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    row, proxy, metric, value = line.rstrip("\n").split("\t")
    rows.setdefault(row, collections.OrderedDict()).setdefault(metric, collections.defaultdict(list))[proxy].append(value)
def num(v):
    v = v.strip()
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("GB", 1024.0), ("MB", 1.0), ("KB", 1 / 1024), ("B", 1 / 1048576)):
        if v.endswith(unit) and v[: -len(unit)].replace(".", "", 1).isdigit():
            return float(v[: -len(unit)]) * f
    return float(v)
for row, metrics in sorted(rows.items()):
    proxies = [p for p in sys.argv[2].split() + ["gateway-off", "direct"] if any(p in m for m in metrics.values())]
    print(f"### {row}\n")
    print("| | " + " | ".join(proxies) + " |")
    print("|---" * (len(proxies) + 1) + "|")
    for metric, by in metrics.items():
        cells = []
        base = statistics.median(map(num, by["nginx"])) if "nginx" in by else None
        for p in proxies:
            vals = [num(v) for v in by.get(p, [])]
            if not vals:
                cells.append("")
                continue
            med = statistics.median(vals)
            fmt = (lambda v: f"{v:,.2f}") if med < 10 else (lambda v: f"{v:,.1f}") if med < 100 else (lambda v: f"{v:,.0f}")
            cell = fmt(med)
            if len(vals) > 1:
                cell += f" [{fmt(min(vals))}–{fmt(max(vals))}]"
            if base and p != "nginx" and metric != "errors":
                cell += f" **{med / base:.2f}×**"
            cells.append(cell)
        print(f"| {metric} | " + " | ".join(cells) + " |")
    print()
PY
} >"$work/table.md"
cat "$work/table.md"
[ -n "$out" ] && cp "$work/table.md" "$out"
for p in "${proxies[@]}"; do stop_proxy "$p"; done
