#!/usr/bin/env bash
# Attack benchmark on loopback (issue 10): for each attack, a normal client is served by the
# proxy while `attack` (bench/tools) runs it against the same entry point. Records the normal
# client's throughput, p50/p99 and errors with and without the attack, the proxy's CPU time
# and peak RSS during the attack, and whether the proxy stayed up. sallyport, HAProxy and nginx
# (nginx also for UDP; HAProxy has no UDP proxy). Interleaved: each attack runs against every
# peer in turn, baseline then attack, before the next attack; with BENCH_ROUNDS, the whole
# sequence is run that many times and the table gives each figure's median over the rounds,
# then every round's values. The table also goes to bench/out/attacks/results-attacks.md.
# Method: bench/README.md.
#
# Attacks (BENCH_ATTACKS, names of `attack` subcommands):
#   rapid-reset made-you-reset continuation hpack   HTTP/2 over TLS, BENCH_H2_CONNS connections
#   slowloris      BENCH_SLOW_CONNS HTTP/1.1 connections, one header line every 5 s (plain HTTP)
#   tls-flood      full TLS 1.3 handshakes from BENCH_TLS_CONNS loops
#   hello-stall    BENCH_SLOW_CONNS connections each sending half a ClientHello
#   udp-flood      datagrams from fresh 127.x.y.z addresses and ports, BENCH_UDP_TASKS senders
#
# Knobs (environment):
#   BENCH_DURATION=10      seconds the normal client is measured, alone and under attack
#   BENCH_ROUNDS=1         interleaved rounds (each runs every attack against every peer)
#   BENCH_QUICK=1          smoke run: 2 s per run
#   BENCH_PEERS="sallyport haproxy nginx"
#   BENCH_ATTACKS="rapid-reset continuation made-you-reset hpack slowloris tls-flood hello-stall udp-flood"
#   BENCH_RATE=200         normal client's requests per second (open loop, 8 keep-alive connections)
#   BENCH_H2_CONNS=4  BENCH_SLOW_CONNS=2000  BENCH_TLS_CONNS=8  BENCH_UDP_TASKS=4
#   BENCH_WORKERS=1        worker threads/processes given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=30 seconds a proxy gets to answer its first request
#   BENCH_PORT_BASE=19400  ports BASE..BASE+40 on 127.0.0.1 (TCP and UDP)
#   BENCH_OUT=bench/out/attacks  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian packages (apt-get)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/attacks}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

common_knobs 19400 30
RUN_SECONDS=${BENCH_DURATION:-10}
[[ $QUICK = 1 ]] && RUN_SECONDS=${BENCH_DURATION:-2}
PEERS=${BENCH_PEERS:-"sallyport haproxy nginx"}
ATTACKS=${BENCH_ATTACKS:-"rapid-reset continuation made-you-reset hpack slowloris tls-flood hello-stall udp-flood"}
RATE=${BENCH_RATE:-200}
ROUNDS=${BENCH_ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "BENCH_ROUNDS must be a positive number, not '$ROUNDS'"
H2_CONNS=${BENCH_H2_CONNS:-4}
SLOW_CONNS=${BENCH_SLOW_CONNS:-2000}
TLS_CONNS=${BENCH_TLS_CONNS:-8}
UDP_TASKS=${BENCH_UDP_TASKS:-4}
# The attack starts this long before the normal client, so that it is at full strength
# (thousands of connections open) while the client is measured.
RAMP_S=2

HOST=small.sallyport.test
BACKEND=127.0.0.1:$((PORT_BASE + 1))
UDP_BACKEND=127.0.0.1:$((PORT_BASE + 2))
declare -A WEB_PORT=([sallyport]=$((PORT_BASE + 10)) [haproxy]=$((PORT_BASE + 20)) [nginx]=$((PORT_BASE + 30)))
declare -A TLS_PORT=([sallyport]=$((PORT_BASE + 11)) [haproxy]=$((PORT_BASE + 21)) [nginx]=$((PORT_BASE + 31)))
declare -A UDP_PORT=([sallyport]=$((PORT_BASE + 12)) [nginx]=$((PORT_BASE + 32)))

for peer in $PEERS; do [[ -n ${WEB_PORT[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"; done
for attack in $ATTACKS; do
    case $attack in
    rapid-reset | continuation | made-you-reset | hpack | slowloris | tls-flood | hello-stall | udp-flood) ;;
    *) die "unknown attack '$attack' in BENCH_ATTACKS" ;;
    esac
done
unset peer attack

trap stop_all EXIT
trap 'exit 130' INT TERM

install_missing() {
    local debs=()
    command -v openssl >/dev/null || debs+=(openssl)
    command -v ss >/dev/null || debs+=(iproute2)
    if has_peer haproxy; then command -v haproxy >/dev/null || debs+=(haproxy); fi
    if has_peer nginx; then
        command -v nginx >/dev/null || debs+=(nginx)
        nginx_has_stream || debs+=(libnginx-mod-stream)
    fi
    install_debs "${debs[@]}"
}

# ---------------------------------------------------------------- configuration
configure() {
    local common=("SMALL_HOST=$HOST" "LARGE_HOST=large.sallyport.test" "BACKEND_SMALL=$BACKEND"
        "BACKEND_LARGE=$BACKEND" "WORKERS=$WORKERS" "CERT=$CERT" "KEY=$KEY")
    local dir=$OUT/sallyport
    mkdir -p "$dir/dynamic"
    render "$BENCH/peers/http-dynamic.yml" "$dir/dynamic/http.yml" "${common[@]}"
    render "$BENCH/peers/udp-dynamic.yml" "$dir/dynamic/udp.yml" "BACKEND=$UDP_BACKEND"
    # The HTTP benchmark's static file, plus the UDP entry point of the UDP benchmark's.
    render "$BENCH/peers/http-sallyport.yml" "$dir/static.yml" "${common[@]}" \
        WEB_PORT="${WEB_PORT[sallyport]}" TLS_PORT="${TLS_PORT[sallyport]}" \
        DYNAMIC_DIR="$dir/dynamic" MIDDLEWARES=""
    sed -i "s|^entryPoints:|entryPoints:\n  udp:\n    address: \"127.0.0.1:${UDP_PORT[sallyport]}/udp\"|" "$dir/static.yml"

    mkdir -p "$OUT/haproxy"
    cat "$CERT" "$KEY" >"$OUT/tls/cert-and-key.pem"
    render "$BENCH/peers/http-haproxy.cfg" "$OUT/haproxy/haproxy.cfg" "${common[@]}" \
        WEB_PORT="${WEB_PORT[haproxy]}" TLS_PORT="${TLS_PORT[haproxy]}" \
        CERT_AND_KEY="$OUT/tls/cert-and-key.pem"

    dir=$OUT/nginx
    mkdir -p "$dir/body" "$dir/proxy"
    chmod 0777 "$dir/body" "$dir/proxy"
    render "$BENCH/peers/http-nginx.conf" "$dir/nginx.conf" "${common[@]}" \
        WEB_PORT="${WEB_PORT[nginx]}" TLS_PORT="${TLS_PORT[nginx]}" OUT="$dir"
    # Stock nginx 1.22 (Debian 12) offers TLS 1.2 at most; the other peers and the clients
    # speak TLS 1.3, so nginx is given it too.
    echo "ssl_protocols TLSv1.2 TLSv1.3;" >"$dir/http-extra.conf"
    : >"$dir/server-extra.conf"
    local load_stream=""
    if ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
        local modules
        modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
        load_stream="load_module ${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so;"
    fi
    mkdir -p "$OUT/nginx-udp"
    render "$BENCH/peers/udp-nginx.conf" "$OUT/nginx-udp/nginx.conf" "BACKEND=$UDP_BACKEND" \
        "WORKERS=$WORKERS" UDP_TIMEOUT=10 UDP_PORT="${UDP_PORT[nginx]}" OUT="$OUT/nginx-udp" \
        LOAD_STREAM_MODULE="$load_stream"
}

# ---------------------------------------------------------------- peers
declare -A PEER_PID UDP_PID
ACTIVE=()

# normal PORT TLS SECONDS : the normal HTTP client; prints its key=value line.
normal() {
    local tls=()
    [[ $2 = tls ]] && tls=(--tls)
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    timeout $(($3 + 20)) $(on_cpu "$LOAD_CPU") "$TOOLS/attack" --connect "127.0.0.1:$1" --host "$HOST" \
        --duration "$3" --conns 8 normal --rate "$RATE" "${tls[@]}" 2>>"$OUT/attack.log" ||
        echo "errors=1 reason=normal-client-failed"
}

# normal_udp PORT SECONDS : the normal UDP client (udp-load, 4 flows, one datagram each in
# flight); prints its key=value line.
normal_udp() {
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    timeout $(($2 + 20)) $(on_cpu "$LOAD_CPU") "$TOOLS/udp-load" --target "127.0.0.1:$1" --flows 4 \
        --window 1 --size 64 --duration "$2" --timeout-ms 250 2>>"$OUT/attack.log" ||
        echo "errors=1 reason=udp-load-failed"
}

answers() { [[ $(field "$(normal "${WEB_PORT[$1]}" plain 1)" ok) =~ ^[1-9] ]]; }
relays() { [[ $(field "$(normal_udp "$1" 1)" received) =~ ^[1-9] ]]; }

# launch PEER : starts the proxy (and nginx's UDP instance) and waits until it answers.
launch() {
    local peer=$1
    case $peer in
    sallyport) start_sallyport sallyport "$SALLYPORT" "$OUT/sallyport/static.yml" ;;
    haproxy) start haproxy "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" ;;
    nginx) start nginx "$PROXY_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" -e "$OUT/nginx/error.log" ;;
    esac
    PEER_PID[$peer]=$LAST_PID
    if [[ $peer = nginx ]]; then
        start nginx-udp "$PROXY_CPU" nginx -p "$OUT/nginx-udp" -c "$OUT/nginx-udp/nginx.conf" \
            -e "$OUT/nginx-udp/error.log"
        UDP_PID[$peer]=$LAST_PID
    elif [[ $peer = sallyport ]]; then
        UDP_PID[$peer]=$LAST_PID
    fi
    local deadline=$((SECONDS + READY_TIMEOUT_S))
    until answers "$peer"; do
        kill -0 "${PEER_PID[$peer]}" 2>/dev/null || { log "$peer: exited at start-up; see $OUT/$peer.log"; return 1; }
        ((SECONDS < deadline)) || { log "$peer: no answer within ${READY_TIMEOUT_S}s"; return 1; }
        sleep 0.3
    done
    log "$peer: ready (pid ${PEER_PID[$peer]})"
}

# attack_args ATTACK PEER : the attack's target and size.
attack_args() {
    local peer=$2
    case $1 in
    rapid-reset | continuation | made-you-reset | hpack) echo "--connect 127.0.0.1:${TLS_PORT[$peer]} --conns $H2_CONNS" ;;
    slowloris) echo "--connect 127.0.0.1:${WEB_PORT[$peer]} --conns $SLOW_CONNS" ;;
    tls-flood) echo "--connect 127.0.0.1:${TLS_PORT[$peer]} --conns $TLS_CONNS" ;;
    hello-stall) echo "--connect 127.0.0.1:${TLS_PORT[$peer]} --conns $SLOW_CONNS" ;;
    udp-flood) echo "--connect 127.0.0.1:${UDP_PORT[$peer]} --conns $UDP_TASKS" ;;
    esac
}

# client ATTACK PEER SECONDS : the normal client that suits the attack, on the same entry point.
client() {
    case $1 in
    udp-flood) normal_udp "${UDP_PORT[$2]}" "$3" ;;
    slowloris) normal "${WEB_PORT[$2]}" plain "$3" ;;
    *) normal "${TLS_PORT[$2]}" tls "$3" ;;
    esac
}

# measure ATTACK PEER ROUND : one baseline run and one run under attack; appends both to
# raw.tsv.
measure() {
    local attack=$1 peer=$2 round=$3 pid line ticks
    pid=${PEER_PID[$peer]}
    [[ $attack = udp-flood ]] && pid=${UDP_PID[$peer]}
    ticks=$(cpu_ticks "$pid")
    line=$(client "$attack" "$peer" "$RUN_SECONDS")
    line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks) / $CLK_TCK }") round=$round"
    printf '%s\t%s\tbaseline\t%s\n' "$attack" "$peer" "$line" >>"$RAW"
    log "$(printf '%-15s %-9s baseline  %s' "$attack" "$peer" "$line")"

    reset_peak_rss "$pid"
    ticks=$(cpu_ticks "$pid")
    local attacker delay=0 ramp=$RAMP_S
    # UDP: the normal client's flows are in place first and the flood begins 1 s later, as a
    # flood hits a router serving established clients (a client that starts while the session
    # table is full is refused by design; see bench/README.md).
    [[ $attack = udp-flood ]] && delay=1 ramp=0
    # shellcheck disable=SC2046 # the taskset prefix and the arguments are meant to split
    (
        sleep "$delay"
        exec $(on_cpu "$LOAD_CPU") "$TOOLS/attack" $(attack_args "$attack" "$peer") \
            --duration $((RUN_SECONDS + RAMP_S + 1 - delay)) "$attack" >"$OUT/attack.out" 2>>"$OUT/attack.log"
    ) &
    attacker=$!
    PIDS+=("$attacker")
    sleep "$ramp"
    line=$(client "$attack" "$peer" "$RUN_SECONDS")
    wait "$attacker" || true
    stop_pid "$attacker"
    line+=" $(sed 's/\([a-z_]*\)=/attack_\1=/g' "$OUT/attack.out" 2>/dev/null)"
    if kill -0 "$pid" 2>/dev/null; then
        line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks) / $CLK_TCK }")"
        line+=" peak_rss_kb=$(peak_rss_kb "$pid") rss_after_kb=$(rss_kb "$pid")"
        # Still serving once the attack is over?
        local after
        after=$(client "$attack" "$peer" 1)
        if [[ $(field "$after" ok)$(field "$after" received) =~ ^[1-9] ]]; then line+=" up=yes"; else line+=" up=no-answer"; fi
    else
        line+=" up=exited"
        log "$peer: EXITED during $attack; see $OUT/$peer.log; restarting it"
        stop_pid "${PEER_PID[$peer]}"
        [[ -n ${UDP_PID[$peer]:-} && ${UDP_PID[$peer]} != "${PEER_PID[$peer]}" ]] && stop_pid "${UDP_PID[$peer]}"
        launch "$peer" || die "$peer did not come back"
    fi
    line+=" round=$round"
    printf '%s\t%s\tattack\t%s\n' "$attack" "$peer" "$line" >>"$RAW"
    log "$(printf '%-15s %-9s attack    %s' "$attack" "$peer" "$line")"
    # Let the proxy close what the attack left behind before the next run.
    sleep 2
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$OUT"/*.log
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    build_tools
    SALLYPORT=""
    if has_peer sallyport; then
        build_sallyport
        [[ -n $SALLYPORT ]] || die "sallyport: $SALLYPORT_SKIP"
    fi
    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 40))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
    done
    # Thousands of slow connections need as many descriptors, in the attacker and the proxies.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    ecdsa_certificate "$HOST" large.sallyport.test
    configure

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi

    start backend "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND" --body-size 64
    start udp-backend "$LOAD_CPU" "$TOOLS/udp-echo" --listen "$UDP_BACKEND"
    local deadline=$((SECONDS + 10))
    until listening "${BACKEND##*:}"; do
        ((SECONDS < deadline)) || die "http-backend did not start; see $OUT/backend.log"
        sleep 0.1
    done

    local peer
    for peer in $PEERS; do launch "$peer" && ACTIVE+=("$peer"); done
    ((${#ACTIVE[@]})) || die "no peer could be started"

    RAW=$OUT/raw.tsv
    : >"$RAW"
    local attack round
    for round in $(seq "$ROUNDS"); do
        if ((ROUNDS > 1)); then log "round $round of $ROUNDS"; fi
        for attack in $ATTACKS; do
            for peer in "${ACTIVE[@]}"; do
                # HAProxy has no UDP proxy.
                [[ $attack = udp-flood && -z ${UDP_PORT[$peer]:-} ]] && continue
                measure "$attack" "$peer" "$round"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; attacker, normal client and backends on CPU $LOAD_CPU (taskset)"
    {
        echo "# Attack benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning; workers per proxy: $WORKERS"
        echo "- normal client: HTTP/1.1 keep-alive GETs at $RATE req/s (open loop, 8 connections, latency from each request's scheduled time), on the attacked entry point (TLS, or plain HTTP for slowloris); UDP: udp-load, 4 flows × 1 datagram in flight (closed loop)"
        echo "- rounds: $ROUNDS (interleaved; the table gives medians)"
        echo "- each run: ${RUN_SECONDS}s of the normal client alone, then ${RUN_SECONDS}s under the attack (started ${RAMP_S}s earlier; udp-flood 1s after the client); attack sizes: HTTP/2 $H2_CONNS connections, slowloris and hello-stall $SLOW_CONNS connections, tls-flood $TLS_CONNS loops, udp-flood $UDP_TASKS senders"
        echo "- versions: $(versions)"
    } >"$header"
    python3 "$BENCH/attacks_report.py" "$RAW" --header "$header" --out "$OUT/results-attacks.md"
    log "written to $OUT/results-attacks.md (raw runs: $RAW) in $((SECONDS - began))s"
}

versions() {
    local v=()
    [[ -n ${SALLYPORT:-} ]] && v+=("$(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo "sallyport ?")")
    has_peer haproxy && v+=("$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)")
    has_peer nginx && v+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
    local IFS=';'
    local joined="${v[*]}"
    echo "${joined//;/, }"
}

main "$@"
