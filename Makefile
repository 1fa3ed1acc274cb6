# The two commands of the README: `make run` and `make test`.
# Both first install what a fresh Debian/Ubuntu machine lacks (as root), or say how.

CARGO ?= cargo
CONFIG ?= routes.yaml

.PHONY: run test check build prereqs

run: prereqs
	$(CARGO) run --release -- run -c $(CONFIG)

test: prereqs
	$(CARGO) test

check: prereqs
	$(CARGO) run --release -- check -c $(CONFIG)

build: prereqs
	$(CARGO) build --release

# Pingora builds zlib-ng with cmake and OpenSSL from source with perl and make.
prereqs:
	@missing=""; \
	for tool in cmake perl make cc; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	pkgs=$$(echo "$$missing" | sed 's/\bcc\b/gcc/'); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$pkgs"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs >/dev/null || exit 1; \
	  else \
	    echo "missing build tools:$$missing"; \
	    echo "run: sudo apt-get install -y$$pkgs"; \
	    exit 1; \
	  fi; \
	fi
