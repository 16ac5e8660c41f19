#!/usr/bin/env bash
# `make bench`: Weir vs nginx, haproxy and a bare Pingora proxy, round robin over the same
# local backends, interleaved runs at 1 and 2 workers, both of Weir's runtimes; big bodies;
# idle connections; latency by algorithm; resilience; the router and selection criterion
# benchmarks; then one table of every figure (bench/summary.py). Prints figures; asserts
# nothing. Takes ~15 min; `QUICK=1 make bench` (~3 min) runs one short round of the
# throughput, big-body and idle-connection parts only and shows the criterion figures of
# their last run. Env: ROUNDS (3), DURATION (8 s), CONNS (50), THREADS ("1 2"), BIG_MIB
# (1024), IDLE_CONNS (10000), CRITERION (1: run the criterion benchmarks). Not part of it
# (run by hand): bench/instructions.py (callgrind instructions per request, deterministic) and
# bench/kernel.py (system calls and context switches per request).
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
if [ -n "${QUICK:-}" ]; then
  export ROUNDS="${ROUNDS:-1}" DURATION="${DURATION:-3}" BIG_MIB="${BIG_MIB:-256}"
  CRITERION="${CRITERION:-0}"
fi
cargo build --release -p weir-server -p pingora-rr -p weir-testkit
target="${CARGO_TARGET_DIR:-target}"
rel="$target/release"
# 10,000 idle client connections need as many descriptors in the proxy and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export BENCH_RESULTS
BENCH_RESULTS="$(mktemp /tmp/weir-bench-results.XXXXXX)"
trap 'rm -f "$BENCH_RESULTS"' EXIT
{
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs),"\
       "$(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "versions: $(nginx -v 2>&1 | cut -d' ' -f3), haproxy $(haproxy -v | head -1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
} >&2
python3 bench/bench.py "$rel" "$@"
python3 bench/bigbody.py "$rel"
python3 bench/idle.py "$rel"
if [ -z "${QUICK:-}" ]; then
  python3 bench/latency.py "$rel"
  # Issue 5's reliability figure: one node killed at 3 s and restarted at 6 s under sequential
  # GETs; prints errors, time to eject and time until traffic returns.
  cargo test --release -q -p weir-server --test health reliability_under_a_node_restart -- --nocapture 2>&1 \
    | grep '^reliability:' || true
  # The resilience layer: one of three nodes answers 503 to half its requests (then stalls) for
  # 20 s under a steady load; errors, p99 and recovery with plain retries, APISIX health
  # checks, outlier detection, and outlier detection with a retry budget.
  python3 bench/resilience.py "$rel"
fi
if [ "${CRITERION:-1}" = 1 ]; then
  # Only the benchmarks the table shows, with short measurements (the full suites:
  # `cargo bench -p weir-proxy --bench router`, `cargo bench -p weir-balance --bench pick`).
  short=(--warm-up-time 1 --measurement-time 3)
  cargo bench -q -p weir-proxy --bench router -- "${short[@]}" 'match/mixed_tries|build/first_load' 2>&1 \
    | grep -E '^[a-z_/ 0-9]+$|time:' || true
  cargo bench -q -p weir-balance --bench pick -- "${short[@]}" 'least_conn/1 thread/1000$|roundrobin/2 threads/100$' 2>&1 \
    | grep -E '^[a-z_/ 0-9]+$|time:' || true
fi
python3 bench/summary.py "$BENCH_RESULTS" "$target"
