#!/usr/bin/env bash
# Soak under reloads (issue 10): HTTP/1.1 (wrk) and HTTP/2 (h2load) load for BENCH_DURATION
# seconds, first steady, then while the dynamic configuration is rewritten every
# BENCH_RELOAD_MS milliseconds, alternating unrelated routers (an HTTP, a TCP and a UDP
# router on entrypoints the load does not use). During both phases, long-lived flows run on
# routers the reloads never change: WebSockets (bench/tools ws-soak), a TCP relay (iperf3 at
# a bounded rate) and UDP sessions (bench/tools udp-load).
#
# Target: zero failed requests and socket errors, p99 during reloads within 1.5× of steady,
# every WebSocket, the iperf3 stream and every UDP session surviving every reload. The same
# files run through Traefik 3.7 beside it (it reads the same Traefik configuration).
#
# Results go to bench/out/soak/results-soak.md. Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=60      seconds of each phase (steady, then reloading)
#   BENCH_QUICK=1          smoke run: phases of 10 s
#   BENCH_RELOAD_MS=500    how often the dynamic configuration is rewritten
#   BENCH_PEERS="sallyport traefik"
#   BENCH_WRK_CONNECTIONS=16  BENCH_H2_CLIENTS=4  BENCH_H2_STREAMS=8
#   BENCH_WEBSOCKETS=50    WebSocket connections held through both phases
#   BENCH_UDP_FLOWS=20     UDP sessions held through both phases
#   BENCH_IPERF_RATE=20M   iperf3's bounded rate through the TCP relay
#   BENCH_WORKERS=1  BENCH_PIN=1  BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1  BENCH_PORT_BASE=18600
#   BENCH_HALT_POLL_NS=    let idle vCPUs spin this long before halting (bench/lib.sh)
#   SALLYPORT_BIN=  TRAEFIK_BIN=  BENCH_OUT=bench/out/soak  BENCH_INSTALL=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/soak}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"
common_knobs 18600 30
if [[ $QUICK = 1 ]]; then PHASE=${BENCH_DURATION:-10}; else PHASE=${BENCH_DURATION:-60}; fi
RELOAD_MS=${BENCH_RELOAD_MS:-500}
PEERS=${BENCH_PEERS:-"sallyport traefik"}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-16}
H2_CLIENTS=${BENCH_H2_CLIENTS:-4}
H2_STREAMS=${BENCH_H2_STREAMS:-8}
WEBSOCKETS=${BENCH_WEBSOCKETS:-50}
UDP_FLOWS=${BENCH_UDP_FLOWS:-20}
IPERF_RATE=${BENCH_IPERF_RATE:-20M}
for n in PHASE RELOAD_MS WRK_CONNECTIONS H2_CLIENTS H2_STREAMS WEBSOCKETS UDP_FLOWS; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n: '${!n}' is not a positive count"
done

BACKEND=$PORT_BASE WS_BACKEND=$((PORT_BASE + 1)) IPERF=$((PORT_BASE + 2)) UDP_BACKEND=$((PORT_BASE + 3))
WEB=$((PORT_BASE + 10)) TCP=$((PORT_BASE + 11)) UDP=$((PORT_BASE + 12)) SPARE=$((PORT_BASE + 13))
SPARE_UDP=$((PORT_BASE + 14)) ADMIN=$((PORT_BASE + 15))

RELOADER=""
cleanup() {
    [[ -n $RELOADER ]] && kill "$RELOADER" 2>/dev/null
    stop_all
    restore_halt_poll
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# static_config PEER : the static configuration both peers read (Traefik's format).
static_config() {
    local dir=$OUT/$1
    cat >"$dir/static.yml" <<EOF
entryPoints:
  web: {address: "127.0.0.1:$WEB"}
  tcp: {address: "127.0.0.1:$TCP"}
  spare: {address: "127.0.0.1:$SPARE"}
  udp: {address: "127.0.0.1:$UDP/udp"}
  spareudp: {address: "127.0.0.1:$SPARE_UDP/udp"}
  traefik: {address: "127.0.0.1:$ADMIN"}
providers:
  providersThrottleDuration: 100ms
  file: {directory: "$dir/dynamic", watch: true}
metrics:
  prometheus: {}
log: {level: ERROR}
EOF
}

# dynamic_config VARIANT : the routers; VARIANT (a or b) changes only the churn routers.
dynamic_config() {
    cat <<EOF
http:
  routers:
    app: {entryPoints: [web], rule: "Host(\`app.test\`)", service: app}
    ws: {entryPoints: [web], rule: "Host(\`ws.test\`)", service: ws}
    churn: {entryPoints: [web], rule: "Host(\`churn-$1.test\`)", service: churn-$1}
  services:
    app: {loadBalancer: {servers: [{url: "http://127.0.0.1:$BACKEND"}]}}
    ws: {loadBalancer: {servers: [{url: "http://127.0.0.1:$WS_BACKEND"}]}}
    churn-$1: {loadBalancer: {servers: [{url: "http://127.0.0.1:$BACKEND"}]}}
tcp:
  routers:
    iperf: {entryPoints: [tcp], rule: "HostSNI(\`*\`)", service: iperf}
    churn: {entryPoints: [spare], rule: "HostSNI(\`*\`)", service: churn-$1}
  services:
    iperf: {loadBalancer: {servers: [{address: "127.0.0.1:$IPERF"}]}}
    churn-$1: {loadBalancer: {servers: [{address: "127.0.0.1:$IPERF"}]}}
udp:
  routers:
    game: {entryPoints: [udp], service: game}
    churn: {entryPoints: [spareudp], service: churn-$1}
  services:
    game: {loadBalancer: {servers: [{address: "127.0.0.1:$UDP_BACKEND"}]}}
    churn-$1: {loadBalancer: {servers: [{address: "127.0.0.1:$UDP_BACKEND"}]}}
EOF
}

# reloads PEER : rewrites the dynamic file (atomically) every RELOAD_MS until killed,
# counting the writes in $OUT/PEER/writes.
reloads() {
    local dir=$OUT/$1/dynamic n=0 variant
    while true; do
        sleep "$(awk "BEGIN { print $RELOAD_MS / 1000 }")"
        n=$((n + 1))
        if ((n % 2)); then variant=b; else variant=a; fi
        dynamic_config "$variant" >"$dir/.next"
        mv -f "$dir/.next" "$dir/routes.yml"
        echo "$n" >"$OUT/$1/writes"
    done
}

# metric PREFIX NAME [LABEL_MATCH] : the sum of a metric's samples on the admin port.
metric() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics" |
        awk -v name="$1_$2" -v match_="${3:-}" '
            ($1 == name || index($1, name "{") == 1) && index($0, match_) { sum += $NF }
            END { printf "%d\n", sum }'
}

# p99_h2load LOGFILE : the 99th percentile (ms) of h2load's per-request log.
p99_h2load() {
    python3 - "$1" <<'EOF'
import sys
lat = sorted(int(line.split()[2]) for line in open(sys.argv[1]) if line.strip())
print(f"{lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000:.2f}" if lat else "nan")
EOF
}

# phase PEER NAME RELOADING : one phase of load; appends a result line to $OUT/raw.tsv.
phase() {
    local peer=$1 name=$2 reloading=$3 prefix=sallyport dir=$OUT/$1
    [[ $peer = traefik ]] && prefix=traefik
    local reloads_before
    reloads_before=$(metric "$prefix" config_reloads_total)
    rm -f "$dir/writes"
    if [[ $reloading = 1 ]]; then
        reloads "$peer" &
        RELOADER=$!
    fi
    # shellcheck disable=SC2046 # the taskset prefix splits into words
    $(on_cpu "$LOAD_CPU") wrk -t 1 -c "$WRK_CONNECTIONS" -d "${PHASE}s" --latency \
        -H "Host: app.test" "http://127.0.0.1:$WEB/" >"$dir/wrk-$name.txt" 2>&1 &
    local wrk=$!
    # shellcheck disable=SC2046
    $(on_cpu "$LOAD_CPU") h2load -D "$PHASE" -c "$H2_CLIENTS" -m "$H2_STREAMS" \
        -H ":authority: app.test" --log-file="$dir/h2load-$name.log" \
        "http://127.0.0.1:$WEB/" >"$dir/h2load-$name.txt" 2>&1 &
    local h2=$!
    wait "$wrk" || true
    wait "$h2" || true
    if [[ $reloading = 1 ]]; then
        kill "$RELOADER" 2>/dev/null || true
        wait "$RELOADER" 2>/dev/null || true
        RELOADER=""
    fi
    sleep 0.5
    local reloads_after writes=0
    reloads_after=$(metric "$prefix" config_reloads_total)
    [[ -f $dir/writes ]] && writes=$(cat "$dir/writes")
    local w=$dir/wrk-$name.txt h=$dir/h2load-$name.txt
    local wrk_rps wrk_p99 wrk_errors h2_rps h2_p99 h2_failed
    wrk_rps=$(awk '/^Requests\/sec/ { print $2 }' "$w")
    wrk_p99=$(awk '$1 == "99%" { v = $2; if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 } printf "%.2f", v }' "$w")
    wrk_errors=$(awk '/Socket errors/ { gsub(/,/, ""); s += $4 + $6 + $8 + $10 } /Non-2xx/ { s += $NF } END { print s + 0 }' "$w")
    h2_rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' "$h")
    h2_failed=$(awk '/^requests:/ { gsub(/,/, ""); print $10 + $12 + $14 }' "$h")
    h2_p99=$(p99_h2load "$dir/h2load-$name.log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$name" "${wrk_rps:-0}" \
        "${wrk_p99:-nan}" "$wrk_errors" "${h2_rps:-0}" "${h2_p99:-nan}" "${h2_failed:-nan}" \
        "$writes" "$((reloads_after - reloads_before))" >>"$OUT/raw.tsv"
    log "$(printf '[%s %s] wrk %s req/s p99 %s ms errors %s | h2load %s req/s p99 %s ms failed %s | writes %s applied %s' \
        "$peer" "$name" "$wrk_rps" "$wrk_p99" "$wrk_errors" "$h2_rps" "$h2_p99" "$h2_failed" "$writes" "$((reloads_after - reloads_before))")"
}

# run_peer PEER : both phases, with the long-lived flows held across them.
run_peer() {
    local peer=$1 dir=$OUT/$1 prefix=sallyport
    [[ $peer = traefik ]] && prefix=traefik
    rm -rf "$dir"
    mkdir -p "$dir/dynamic"
    static_config "$peer"
    dynamic_config a >"$dir/dynamic/routes.yml"
    case $peer in
    sallyport) start_sallyport sallyport "$SALLYPORT" "$dir/static.yml" ;;
    traefik) start_traefik traefik "$dir/static.yml" ;;
    esac
    local proxy=$LAST_PID deadline=$((SECONDS + READY_TIMEOUT_S))
    until [[ $(curl -s -o /dev/null -w '%{http_code}' -H 'Host: app.test' "http://127.0.0.1:$WEB/") = 200 ]]; do
        ((SECONDS < deadline)) || die "$peer did not serve; see $OUT/$peer.log"
        sleep 0.2
    done
    local hold=$((2 * PHASE + 8))
    # shellcheck disable=SC2046
    $(on_cpu "$LOAD_CPU") "$TOOLS/ws-soak" hold --url "ws://127.0.0.1:$WEB/" --host ws.test \
        --connections "$WEBSOCKETS" --duration "$hold" >"$dir/ws.txt" 2>"$dir/ws.err" &
    local ws=$!
    # shellcheck disable=SC2046
    $(on_cpu "$LOAD_CPU") iperf3 -c 127.0.0.1 -p "$TCP" -t "$hold" -b "$IPERF_RATE" \
        --connect-timeout 3000 >"$dir/iperf.txt" 2>&1 &
    local iperf=$!
    # shellcheck disable=SC2046
    $(on_cpu "$LOAD_CPU") "$TOOLS/udp-load" --target "127.0.0.1:$UDP" --flows "$UDP_FLOWS" \
        --duration "$hold" --timeout-ms 1000 >"$dir/udp.txt" 2>&1 &
    local udp=$!
    sleep 2
    phase "$peer" steady 0
    sleep 1
    phase "$peer" reloading 1
    local ws_ok=0 iperf_ok=0 udp_line sessions="n/a"
    wait "$ws" && ws_ok=1
    wait "$iperf" && iperf_ok=1
    wait "$udp" || true
    udp_line=$(cat "$dir/udp.txt")
    if [[ $peer = sallyport ]]; then sessions=$(metric "$prefix" udp_sessions_total 'router="game@file"'); fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$peer" "$(cat "$dir/ws.txt")" "$ws_ok" "$iperf_ok" \
        "$(field "$udp_line" lost)" "$(field "$udp_line" received)" "$sessions" >>"$OUT/flows.tsv"
    log "[$peer] websockets: $(cat "$dir/ws.txt") | iperf3 survived: $iperf_ok | udp: $udp_line | udp sessions opened: $sessions"
    stop_pid "$proxy"
}

main() {
    mkdir -p "$OUT"
    rm -f "$OUT/raw.tsv" "$OUT/flows.tsv"
    local debs=()
    for tool in wrk h2load iperf3 curl; do
        command -v "$tool" >/dev/null || debs+=("$({ [[ $tool = h2load ]] && echo nghttp2-client; } || echo "$tool")")
    done
    install_debs "${debs[@]}"
    build_tools
    build_sallyport
    [[ -n $SALLYPORT ]] || die "no sallyport to measure: $SALLYPORT_SKIP"
    has_peer traefik && locate_traefik
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    set_halt_poll
    start backend "$LOAD_CPU" "$TOOLS/http-backend" --listen "127.0.0.1:$BACKEND" --body-size 64
    start ws-backend "$LOAD_CPU" "$TOOLS/ws-soak" serve --listen "127.0.0.1:$WS_BACKEND"
    start iperf-server "$LOAD_CPU" iperf3 -s -p "$IPERF"
    start udp-backend "$LOAD_CPU" "$TOOLS/udp-echo" --listen "127.0.0.1:$UDP_BACKEND"
    sleep 1
    for peer in $PEERS; do
        run_peer "$peer"
    done
    {
        echo "# Soak under reloads — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load; $(idle_policy)"
        echo "- proxies on CPU $PROXY_CPU with $WORKERS worker(s); everything else on CPU $LOAD_CPU (BENCH_PIN=$PIN)"
        echo "- phases of ${PHASE}s: wrk -t1 -c$WRK_CONNECTIONS, and h2load -c$H2_CLIENTS -m$H2_STREAMS (h2c) at the same time, to one HTTP router; reloads every ${RELOAD_MS} ms alternate an HTTP, a TCP and a UDP router the load does not use"
        echo "- held across both phases: $WEBSOCKETS WebSockets (a message each every 100 ms), iperf3 at $IPERF_RATE through a TCP router, $UDP_FLOWS UDP flows"
        echo
        echo "| peer | phase | wrk req/s | wrk p99 ms | wrk errors | h2load req/s | h2load p99 ms | h2load failed | rewrites | reloads applied |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 }' "$OUT/raw.tsv"
        echo
        echo "| peer | WebSockets (ws-soak) | WebSockets all alive | iperf3 stream alive | UDP lost | UDP answers | UDP sessions opened (should be $UDP_FLOWS) |"
        echo "|---|---|---:|---:|---:|---:|---:|"
        awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, ($3 ? "yes" : "NO"), ($4 ? "yes" : "NO"), $5, $6, $7 }' "$OUT/flows.tsv"
        echo
        echo "p99 during reloads ÷ steady (target ≤ 1.5×):"
        awk -F'\t' '$2 == "steady" { w[$1] = $4; h[$1] = $7 } $2 == "reloading" && w[$1] > 0 && h[$1] > 0 {
            printf "- %s: wrk %.2f×, h2load %.2f×\n", $1, $4 / w[$1], $7 / h[$1] }' "$OUT/raw.tsv"
    } | tee "$OUT/results-soak.md"
}

main "$@"
