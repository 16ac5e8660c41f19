# Weir's developer entry points. Everything builds against the system OpenSSL:
# .cargo/config.toml sets OPENSSL_NO_VENDOR for every cargo command, so `make` and plain
# `cargo build` / `cargo test` share one build.
CARGO ?= cargo
CONF ?= conf/weir.yaml
TARGET := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)

.PHONY: build run test lint doc check-conf ci bench soak clean

build:
	$(CARGO) build --release --workspace --bins

## run: build Weir and start it on $(CONF) with three local demo backends
run:
	$(CARGO) build --bin weir --bin weir-demo-backend
	./scripts/run-demo.sh $(CONF)

## test: every unit, golden and end-to-end test; a failing test binary never stops the others
test:
	$(CARGO) test --workspace --all-targets --no-fail-fast

## lint: formatting and clippy, warnings as errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## doc: rustdoc for the workspace (warnings as errors)
doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

## check-conf: validate conf/weir.yaml and every example with `weir -t`
check-conf:
	$(CARGO) build --bin weir
	@for f in conf/weir.yaml conf/examples/*.yaml; do \
		printf '%-40s ' $$f; $(TARGET)/debug/weir -t -c $$f || exit 1; \
	done

## ci: what .ci/run runs after installing system packages (the tests include `weir -t` on
## every example and every invalid golden file)
ci: lint test

## bench: throughput and latency against nginx and haproxy (prints figures, asserts nothing)
bench:
	./bench/run.sh

## soak: two minutes of faulty backends (resets, hangs, trickles, garbage, refusals) under 32
## concurrent clients against the real binary; prints the figures, fails on a bad response,
## a crash, RSS growth over 10% or leaked descriptors (SOAK_SECS=n for another length)
SOAK_SECS ?= 120
soak:
	SOAK_SECS=$(SOAK_SECS) $(CARGO) test -p weir-server --test faulty_backends -- --nocapture

clean:
	$(CARGO) clean
