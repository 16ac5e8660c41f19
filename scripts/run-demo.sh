#!/usr/bin/env bash
# `make run`: start three demo backends (127.0.0.1:9101-9103) and Weir on the given config.
# Ctrl-C stops everything.
set -euo pipefail
conf="${1:-conf/weir.yaml}"
bin="${CARGO_TARGET_DIR:-target}/${PROFILE:-debug}"

"$bin/weir" -t -c "$conf"
"$bin/weir-demo-backend" 9101 9102 9103 &
backends=$!
trap 'kill $backends 2>/dev/null || true' EXIT INT TERM

cat <<MSG

Weir is starting on the listeners of $conf. Try, in another terminal:

  for i in 1 2 3 4 5 6; do curl -s localhost:9080/demo/hello; done      # 1:1:1
  for i in 1 2 3 4 5 6; do curl -s localhost:9080/weighted/x; done      # 3:2:1, interleaved
  curl -si localhost:9080/nowhere                                       # 404 from Weir
  curl -s localhost:9090/v1/healthcheck                                 # health of /demo's nodes
  curl -s localhost:9090/metrics | grep http_status                     # Prometheus metrics
  open http://127.0.0.1:9090/ui/ in a browser                           # the status page

MSG
RUST_LOG="${RUST_LOG:-info}" "$bin/weir" -c "$conf"
