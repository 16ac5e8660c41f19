#!/usr/bin/env bash
# `make bench`: Weir vs nginx, haproxy and a bare Pingora proxy, round robin over the same
# three local backends, one worker each, the same wrk load, interleaved runs. Prints figures;
# asserts nothing. Options via env: ROUNDS (3), DURATION (8 s), CONNS (50).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
export OPENSSL_NO_VENDOR=1
cargo build --release -p weir-server -p pingora-rr -p weir-testkit
rel="${CARGO_TARGET_DIR:-target}/release"
python3 bench/bench.py "$rel" "$@"
python3 bench/latency.py "$rel"
# Issue 5's reliability figure: one node killed at 3 s and restarted at 6 s under sequential
# GETs; prints errors, time to eject and time until traffic returns.
cargo test --release -q -p weir-server --test health reliability_under_a_node_restart -- --nocapture 2>&1 \
  | grep '^reliability:' || true
# The resilience layer: one of three nodes answers 503 to half its requests (then stalls) for
# 20 s under a steady load; errors, p99 and recovery with plain retries, APISIX health checks,
# outlier detection, and outlier detection with a retry budget.
python3 bench/resilience.py "$rel"
