#!/usr/bin/env bash
# The middleware benchmark (issue 4): requests per second through a chain of five common
# middlewares — ipAllowList, rateLimit with a limit far above the load, headers, stripPrefix,
# compress (present, nothing to compress) — against the same proxy without them, for sallyport,
# Traefik (the same configuration files) and nginx doing the same rewriting. The target: the
# chain costs sallyport under 10% of its throughput.
#
# It is bench/http_proxy.sh with middleware peers (PROXY-mw) and no routers test; every knob of
# that script applies (BENCH_DURATION, BENCH_ROUNDS, BENCH_QUICK, BENCH_PIN, SALLYPORT_BIN…).
# Results: bench/out/http-middlewares/results-http.md.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PEERS=${BENCH_PEERS:-"sallyport sallyport-mw nginx nginx-mw traefik traefik-mw"}
export BENCH_CELLS=${BENCH_CELLS:-"h1-small-64 h1-small-256 h2-small-64"}
export BENCH_ROUTERS=${BENCH_ROUTERS-""}
export BENCH_OUT=${BENCH_OUT:-$here/out/http-middlewares}
exec "$here/http_proxy.sh" "$@"
