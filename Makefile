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
# into a virtualenv from PyPI); the limits tests, curl (the HTTP/2 413 as curl sees it).
TEST_TOOLS := $(BUILD_TOOLS) promtool:prometheus prometheus:prometheus testssl:testssl.sh \
  htpasswd:apache2-utils python3:python3 pebble:pebble redis-server:redis-server \
  redis-cli:redis-tools node:nodejs curl:curl

.PHONY: run test check build dist deb image package-test cold-start soak prereqs test-prereqs

# What the gateway writes (the self-signed certificate, ACME's files) goes to the state
# directory: /var/lib/gateway for a service; target/state for these developer commands,
# which need no root.
DEV_STATE := STATE_DIRECTORY=$${STATE_DIRECTORY:-$(CURDIR)/target/state}

run: prereqs
	$(DEV_STATE) $(CARGO) run --release -- run -c $(CONFIG)

# --no-fail-fast: every test binary runs even when one fails, so one failure never hides
# the rest; cargo still exits non-zero if any test failed.
test: test-prereqs
	$(CARGO) test --no-fail-fast

check: prereqs
	$(DEV_STATE) $(CARGO) run --release -- check -c $(CONFIG)

build: prereqs
	$(CARGO) build --release

# A portable binary: linked statically against glibc (`+crt-static`; the musl target is
# not installable on these machines), a static PIE so the kernel still places it at a
# random address, stripped, in a tarball with the example config, the systemd unit and
# the README, and the tarball's SHA-256 beside it. CARGO_TARGET_DIR is honoured.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
DIST_TARGET := x86_64-unknown-linux-gnu
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DIST := gateway-$(VERSION)-x86_64-linux

dist: prereqs
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --release --bin gateway --target $(DIST_TARGET)
	rm -rf $(TARGET_DIR)/dist/$(DIST) && mkdir -p $(TARGET_DIR)/dist/$(DIST)
	cp $(TARGET_DIR)/$(DIST_TARGET)/release/gateway $(TARGET_DIR)/dist/$(DIST)/
	strip $(TARGET_DIR)/dist/$(DIST)/gateway
	ldd $(TARGET_DIR)/dist/$(DIST)/gateway 2>&1 | grep -Eq 'statically linked|not a dynamic executable'
	cp routes.yaml README.md docs/systemd/gateway@.service docs/systemd/gateway-upgrade $(TARGET_DIR)/dist/$(DIST)/
	tar -C $(TARGET_DIR)/dist -czf $(TARGET_DIR)/dist/$(DIST).tar.gz $(DIST)
	cd $(TARGET_DIR)/dist && sha256sum $(DIST).tar.gz > $(DIST).tar.gz.sha256
	@cat $(TARGET_DIR)/dist/$(DIST).tar.gz.sha256
	@ls -l $(TARGET_DIR)/dist/$(DIST).tar.gz $(TARGET_DIR)/dist/$(DIST)/gateway

# The Debian package (cargo-deb, [package.metadata.deb] in Cargo.toml and packaging/deb/):
# target/debian/gateway_VERSION-1_amd64.deb.
deb: prereqs
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked --version 3.8.0
	$(CARGO) deb --strip

# The container image (packaging/container/Containerfile, FROM scratch): the static
# binary of `make dist`, the image's routes.yaml, an empty state directory.
PODMAN ?= podman
image: dist
	rm -rf $(TARGET_DIR)/image && mkdir -p $(TARGET_DIR)/image/empty
	cp $(TARGET_DIR)/dist/$(DIST)/gateway packaging/container/Containerfile \
	  packaging/container/routes.yaml packaging/container/nsswitch.conf $(TARGET_DIR)/image/
	$(PODMAN) build -t gateway:$(VERSION) -t gateway:latest -f $(TARGET_DIR)/image/Containerfile $(TARGET_DIR)/image

# Builds the package, the tarball and the container image and uses each in a clean
# Debian 12 root and under podman (packaging/test). As root; 21 min from a clean checkout
# (two release builds), under 2 min when they are done. Not in .ci/run (see there).
package-test: prereqs
	packaging/test

# Issue 29's cold-start figure (docs/on-demand.md): 20 cold starts of an app that loads
# for 3 s, time to first byte after the app listens; about a minute, on a release build.
cold-start: test-prereqs
	$(CARGO) test --release --test on_demand -- --ignored cold_start_latency --nocapture

# Issue 31's soak (docs/reliability.md): an hour of mixed load with a fault every 2.5
# minutes, on a release build; `make soak MINUTES=5` for a short one. As root for the
# full-disk fault (a tmpfs of its own).
MINUTES ?= 60
soak: test-prereqs
	bench/soak.sh --minutes $(MINUTES)

prereqs:
	@./.ci/install-missing $(BUILD_TOOLS)

test-prereqs:
	@./.ci/install-missing $(TEST_TOOLS)
