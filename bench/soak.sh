#!/usr/bin/env bash
# The soak (issue 31, docs/reliability.md): the gateway with a realistic configuration
# (host and path routes, two replicas, Basic, forward auth, API keys, max_concurrent with
# a queue, Redis, an ACME host on Pebble, a file access log, Prometheus), steady mixed load
# (keep-alive GETs, minutes-long SSE streams, WebSockets, 50 MiB uploads, new TLS
# connections, wrong passwords) and a fault every 2.5 minutes in rotation; a CSV row every
# 10 s, two pictures and a verdict.
#
#   bench/soak.sh [--minutes N] [--debug]     (default 60 minutes, release build)
#
# Loopback only. As root the access log gets a tmpfs of its own (for the full-disk
# fault); without root that fault is skipped. Output: target/soak/<time>/ (samples.csv,
# summary.md, soak-memory.png, soak-traffic.png, every process's log). Exit 0 when every
# check held. Needs redis-server, pebble, prometheus, htpasswd, openssl, prlimit and
# python3 (`make test-prereqs` installs them); bench/soak/setup makes its virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=60 profile=release
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes=$2; shift 2 ;;
    --debug) profile=debug; shift ;;
    *) echo "usage: bench/soak.sh [--minutes N] [--debug]" >&2; exit 2 ;;
  esac
done
./.ci/install-missing redis-server:redis-server pebble:pebble prometheus:prometheus \
  htpasswd:apache2-utils openssl:openssl prlimit:util-linux python3:python3
bench/soak/setup
if [ "$profile" = release ]; then cargo build --release -q; else cargo build -q; fi
out=target/soak/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
out=$(cd "$out" && pwd)
# The upgrade fault starts the binary again: a copy of its own, so a build meanwhile
# changes nothing.
cp "target/$profile/gateway" "$out/gateway"
# The fd fault's client opens about 1,800 connections.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "soak: $minutes minutes, $profile build, output in $out"
cd bench/soak
exec .venv/bin/python soak.py --minutes "$minutes" --gateway "$out/gateway" \
  --python "$(pwd)/.venv/bin/python" --out "$out"
