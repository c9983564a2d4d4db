#!/usr/bin/env bash
# Regenerates src/hot-functions.txt, the functions a request runs, hottest first, which
# build.rs has rust-lld link together at the start of the release binary's code.
#
# Runs the observability benchmark's instructions part (bench/observability.sh: sallyport
# under callgrind, plain HTTP/1.1 through one router, with nothing observed, with metrics,
# and with access logs and metrics), keeping the profiles, then lists their functions with
# bench/hot_functions.py. Rerun it after changes to the request path, and commit the list:
# functions it lacks are linked where they would have been, which costs speed, not
# correctness. Then rebuild (cargo build --release) to use it.
#
#   bench/hot_functions.sh
#   SALLYPORT_BIN=target/release/sallyport bench/hot_functions.sh   # an existing build
#
# Knobs: BENCH_CONFIGS (default "off metrics both-clf both"), BENCH_DURATION, and the rest of
# bench/observability.sh's.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/out/observability}
BIN=${SALLYPORT_BIN:-$ROOT/target/release/sallyport}
rm -f "$OUT"/callgrind-*.out.1
BENCH_OUT=$OUT BENCH_PARTS=instructions BENCH_KEEP_PROFILES=1 \
    BENCH_CONFIGS=${BENCH_CONFIGS:-"off metrics both-clf both"} \
    SALLYPORT_BIN=${SALLYPORT_BIN:-} "$ROOT/bench/observability.sh"
shopt -s nullglob
profiles=("$OUT"/callgrind-*.out.1)
((${#profiles[@]})) || { echo "hot_functions.sh: no profiles in $OUT" >&2; exit 1; }
python3 "$ROOT/bench/hot_functions.py" "$ROOT/src/hot-functions.txt" "$(basename "$BIN")" "${profiles[@]}"
rm -f "${profiles[@]}"
