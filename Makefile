# The two commands of the README: `make run` and `make test`.
# Both first install what a fresh Debian/Ubuntu machine lacks (as root), or say how.

CARGO ?= cargo
CONFIG ?= routes.yaml

# tool:package pairs. Pingora builds zlib-ng with cmake and OpenSSL with perl and make.
BUILD_TOOLS := cmake:cmake perl:perl make:make cc:gcc
# The observability tests run promtool and a real Prometheus server; the TLS scan,
# testssl.sh; the access tests, Apache's htpasswd; the pool tests, app replicas written
# in Python (standard library only); the ACME tests, Pebble (an ACME server and its
# test DNS, pebble-challtestsrv); the scale-out tests, a real Redis server and redis-cli;
# the security tests, a Node app (and Python app servers, which tests/apps/setup installs
# into a virtualenv from PyPI).
TEST_TOOLS := $(BUILD_TOOLS) promtool:prometheus prometheus:prometheus testssl:testssl.sh \
  htpasswd:apache2-utils python3:python3 pebble:pebble redis-server:redis-server \
  redis-cli:redis-tools node:nodejs

.PHONY: run test check build prereqs test-prereqs

run: prereqs
	$(CARGO) run --release -- run -c $(CONFIG)

# --no-fail-fast: every test binary runs even when one fails, so one failure never hides
# the rest; cargo still exits non-zero if any test failed.
test: test-prereqs
	$(CARGO) test --no-fail-fast

check: prereqs
	$(CARGO) run --release -- check -c $(CONFIG)

build: prereqs
	$(CARGO) build --release

prereqs:
	@./.ci/install-missing $(BUILD_TOOLS)

test-prereqs:
	@./.ci/install-missing $(TEST_TOOLS)
