#!/usr/bin/env bash
# Databases through the router (issue 9), on loopback: PostgreSQL with pgbench (select-only,
# 8 clients) straight to the server over TLS, through sallyport in TLS passthrough (routed by
# SNI after the SSLRequest) and through sallyport terminating TLS; Redis with redis-benchmark
# over TLS straight to redis-server and through sallyport in TLS passthrough. Target:
# passthrough within 5% of direct. HAProxy (mode tcp, one thread, on the same core) is the
# reference for what a relay hop costs on this machine: it passes Redis through by SNI, and
# relays PostgreSQL without routing (it cannot read the SNI behind an SSLRequest).
#
# Interleaved rounds, medians; the tables also go to bench/out/databases/results-databases.md.
# Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_DURATION=5       seconds of every pgbench run (BENCH_SECONDS is the same knob)
#   BENCH_ROUNDS=3         rounds; each round runs every path of every suite in turn
#   BENCH_QUICK=1          smoke run: 1 round of 1 s, 20,000 Redis requests
#   BENCH_SUITES="pg redis"
#   BENCH_CLIENTS=8        pgbench and redis-benchmark clients
#   BENCH_PG_SCALE=5       pgbench scale (100,000 accounts rows per unit)
#   BENCH_REDIS_REQUESTS=200000  requests per redis-benchmark run (GET, then SET)
#   BENCH_HAPROXY=1        also measure through HAProxy (0: not)
#   BENCH_WORKERS=1        sallyport worker threads (SALLYPORT_WORKERS), HAProxy nbthread
#   BENCH_PIN=1            pin with taskset: the proxies on BENCH_PROXY_CPU; the servers and the
#                          load generators on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=0  BENCH_LOAD_CPU=1
#   BENCH_READY_TIMEOUT=30 seconds a server or the router gets to answer
#   BENCH_PORT_BASE=19100  ports BASE..BASE+21 on 127.0.0.1
#   BENCH_OUT=bench/out/databases  where logs, configurations and results go
#   BENCH_INSTALL=1        install missing Debian packages (apt-get)
#   BENCH_HALT_POLL_NS=    let idle vCPUs spin this long before halting (bench/lib.sh)
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/databases}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

BENCH_DURATION=${BENCH_DURATION:-${BENCH_SECONDS:-}}
common_knobs 19100 30
SUITES=${BENCH_SUITES:-"pg redis"}
CLIENTS=${BENCH_CLIENTS:-8}
PG_SCALE=${BENCH_PG_SCALE:-5}
if [[ $QUICK = 1 ]]; then REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-20000}; else
    REDIS_REQUESTS=${BENCH_REDIS_REQUESTS:-200000}
fi
HAPROXY=${BENCH_HAPROXY:-1}
PEERS="sallyport"
[[ $HAPROXY = 1 ]] && PEERS+=" haproxy"

for suite in $SUITES; do [[ $suite = pg || $suite = redis ]] || die "BENCH_SUITES takes pg and redis, not '$suite'"; done
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CLIENTS: '$CLIENTS' is not a positive count"
[[ $REDIS_REQUESTS =~ ^[1-9][0-9]*$ ]] || die "BENCH_REDIS_REQUESTS: '$REDIS_REQUESTS' is not a positive count"
unset suite

PG_PORT=$PORT_BASE
REDIS_PORT=$((PORT_BASE + 1))
ROUTER_PORT=$((PORT_BASE + 10))
HAPROXY_PG_PORT=$((PORT_BASE + 20))
HAPROXY_REDIS_PORT=$((PORT_BASE + 21))
# Names routed by SNI: PostgreSQL passed through, PostgreSQL terminated, Redis passed through.
PG_PASS=pass.db.bench.test
PG_TERM=term.db.bench.test
REDIS_PASS=redis.bench.test

wants() { [[ " $SUITES " = *" $1 "* ]]; }

# ---------------------------------------------------------------- processes, stopped by PID
# PostgreSQL's data lives outside the repository, where its account can reach it.
PG_DATA=""
cleanup() {
    stop_all
    restore_halt_poll
    [[ -n $PG_DATA ]] && rm -rf "$PG_DATA"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_missing() {
    local debs=()
    command -v openssl >/dev/null || debs+=(openssl)
    if has_peer haproxy; then command -v haproxy >/dev/null || debs+=(haproxy); fi
    if wants pg; then
        command -v pgbench >/dev/null || debs+=(postgresql-contrib)
        pg_bin >/dev/null || debs+=(postgresql)
    fi
    if wants redis; then
        command -v redis-server >/dev/null || debs+=(redis-server)
        command -v redis-benchmark >/dev/null || debs+=(redis-tools)
    fi
    install_debs "${debs[@]}"
}

# pg_bin : the bin directory of the newest PostgreSQL server installed the Debian way.
pg_bin() {
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)
    [[ -n $dir && -x $dir/postgres ]] && echo "$dir"
}

# as_pg CMD... : runs CMD as the postgres account when root (initdb and postgres refuse root).
# setpriv execs, so the PID started is PostgreSQL's own and stopping it by PID works.
AS_PG=()
[[ $(id -u) = 0 ]] && AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups)
as_pg() { "${AS_PG[@]}" "$@"; }

# ---------------------------------------------------------------- configuration
configure() {
    mkdir -p "$OUT/sallyport"
    bash "$ROOT/examples/make-certs.sh" "$OUT/certs" "$PG_PASS" "$PG_TERM" "$REDIS_PASS"
    cat >"$OUT/sallyport/static.yml" <<EOF
entryPoints:
  db:
    address: "127.0.0.1:$ROUTER_PORT"
providers:
  file:
    filename: "$OUT/sallyport/dynamic.yml"
log:
  level: ERROR
EOF
    cat >"$OUT/sallyport/dynamic.yml" <<EOF
tcp:
  routers:
    pg-pass:
      rule: "HostSNI(\`$PG_PASS\`)"
      service: pg
      tls: {passthrough: true}
    pg-term:
      rule: "HostSNI(\`$PG_TERM\`)"
      service: pg
      tls: {}
    redis-pass:
      rule: "HostSNI(\`$REDIS_PASS\`)"
      service: redis
      tls: {passthrough: true}
  services:
    pg: {loadBalancer: {servers: [{address: "127.0.0.1:$PG_PORT"}]}}
    redis: {loadBalancer: {servers: [{address: "127.0.0.1:$REDIS_PORT"}]}}
tls:
  certificates:
    - {certFile: "$OUT/certs/$PG_TERM.crt", keyFile: "$OUT/certs/$PG_TERM.key"}
EOF
    mkdir -p "$OUT/haproxy"
    cat >"$OUT/haproxy/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
# PostgreSQL: relayed as it is; HAProxy has no SSLRequest support, so no SNI routing.
frontend pg
    bind 127.0.0.1:$HAPROXY_PG_PORT
    default_backend pg
backend pg
    server pg 127.0.0.1:$PG_PORT
# Redis: routed by the SNI of the ClientHello, passed through.
frontend redis
    bind 127.0.0.1:$HAPROXY_REDIS_PORT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend redis if { req.ssl_sni -i $REDIS_PASS }
backend redis
    server redis 127.0.0.1:$REDIS_PORT
EOF
}

# ---------------------------------------------------------------- servers
wait_for() {
    local what=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "$what not ready within ${READY_TIMEOUT_S}s; see $OUT/"
        sleep 0.2
    done
}

start_postgres() {
    local bin
    bin=$(pg_bin) || die "no PostgreSQL server in /usr/lib/postgresql/*/bin"
    PG_DATA=$(mktemp -d /tmp/sallyport-bench-pg.XXXXXX)
    chmod 700 "$PG_DATA"
    install -m 600 "$OUT/certs/$PG_PASS.crt" "$OUT/certs/$PG_PASS.key" "$PG_DATA/"
    [[ $(id -u) = 0 ]] && chown -R postgres: "$PG_DATA"
    as_pg "$bin/initdb" -D "$PG_DATA/data" -U postgres --auth=trust --no-sync >"$OUT/initdb.log" 2>&1 ||
        die "initdb failed; see $OUT/initdb.log"
    # PostgreSQL and its backends inherit the pinning. ssl=on: TLS for direct and passthrough
    # clients; the terminating router connects without TLS.
    start postgres "$LOAD_CPU" "${AS_PG[@]}" "$bin/postgres" -D "$PG_DATA/data" -p "$PG_PORT" \
        -c listen_addresses=127.0.0.1 -c unix_socket_directories="$PG_DATA" -c fsync=off -c max_connections=64 \
        -c ssl=on -c ssl_cert_file="$PG_DATA/$PG_PASS.crt" -c ssl_key_file="$PG_DATA/$PG_PASS.key"
    wait_for PostgreSQL "$bin/pg_isready" -h 127.0.0.1 -p "$PG_PORT" -t 1
    log "initialising pgbench tables (scale $PG_SCALE)…"
    PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$PG_PORT" -U postgres -i -q -s "$PG_SCALE" postgres \
        >"$OUT/pgbench-init.log" 2>&1 || die "pgbench -i failed; see $OUT/pgbench-init.log"
}

start_redis() {
    start redis "$LOAD_CPU" redis-server --bind 127.0.0.1 --port 0 --tls-port "$REDIS_PORT" \
        --tls-cert-file "$OUT/certs/$REDIS_PASS.crt" --tls-key-file "$OUT/certs/$REDIS_PASS.key" \
        --tls-auth-clients no --save '' --appendonly no --dir "$OUT"
    wait_for redis-server redis-cli --tls --cacert "$OUT/certs/ca.crt" -h 127.0.0.1 -p "$REDIS_PORT" PING
}

start_router() {
    start_sallyport sallyport "$SALLYPORT" "$OUT/sallyport/static.yml"
    ROUTER_PID=$LAST_PID
    # Ready once the file is applied: a passed-through TLS Redis connection answers.
    if wants redis; then
        wait_for sallyport redis-cli --tls --sni "$REDIS_PASS" --cacert "$OUT/certs/ca.crt" \
            -h 127.0.0.1 -p "$ROUTER_PORT" PING
    else
        wait_for sallyport env PGSSLMODE=require psql -X -At -h "$PG_PASS" \
            "hostaddr=127.0.0.1 port=$ROUTER_PORT user=postgres dbname=postgres" -c 'SELECT 1'
    fi
}

start_haproxy() {
    start haproxy "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg"
    HAPROXY_PID=$LAST_PID
    if wants redis; then
        wait_for haproxy redis-cli --tls --sni "$REDIS_PASS" --cacert "$OUT/certs/ca.crt" \
            -h 127.0.0.1 -p "$HAPROXY_REDIS_PORT" PING
    else
        wait_for haproxy listening "$HAPROXY_PG_PORT"
    fi
}

# ---------------------------------------------------------------- one run
# pg_env PATH : the libpq environment of a path (with PGSSLMODE=require: TLS, not verified).
pg_env() {
    case $1 in
    direct) echo "PGHOST=127.0.0.1 PGPORT=$PG_PORT" ;;
    pass) echo "PGHOST=$PG_PASS PGHOSTADDR=127.0.0.1 PGPORT=$ROUTER_PORT" ;;
    term) echo "PGHOST=$PG_TERM PGHOSTADDR=127.0.0.1 PGPORT=$ROUTER_PORT" ;;
    haproxy) echo "PGHOST=127.0.0.1 PGPORT=$HAPROXY_PG_PORT" ;;
    esac
}

# proxy_of PATH : the PID of the proxy a path goes through (none for direct).
proxy_of() {
    case $1 in
    direct) ;;
    haproxy) echo "$HAPROXY_PID" ;;
    *) echo "$ROUTER_PID" ;;
    esac
}

# measure SUITE PATH : sets MEASURED to one key=value line.
measure() {
    local suite=$1 path=$2 line ticks=0 started pid
    pid=$(proxy_of "$path")
    [[ -n $pid ]] && ticks=$(cpu_ticks "$pid")
    started=$(date +%s%N)
    case $suite in
    pg)
        # shellcheck disable=SC2046 # pg_env and the taskset prefix split into words
        line=$(env $(pg_env "$path") PGSSLMODE=require PGUSER=postgres \
            timeout $((RUN_SECONDS + 30)) $(on_cpu "$LOAD_CPU") \
            pgbench -n -S -c "$CLIENTS" -j 1 -T "$RUN_SECONDS" postgres 2>&1 |
            tee -a "$OUT/pgbench.log" | python3 "$BENCH/databases_report.py" pgbench) ||
            line="errors=1 reason=pgbench-failed"
        ;;
    redis)
        local sni=() port=$REDIS_PORT
        [[ $path = pass ]] && sni=(--sni "$REDIS_PASS") port=$ROUTER_PORT
        [[ $path = haproxy ]] && sni=(--sni "$REDIS_PASS") port=$HAPROXY_REDIS_PORT
        local errors=$OUT/redis-benchmark.run.err csv
        # shellcheck disable=SC2046
        if csv=$(timeout 300 $(on_cpu "$LOAD_CPU") redis-benchmark --tls "${sni[@]}" \
            --cacert "$OUT/certs/ca.crt" -h 127.0.0.1 -p "$port" -c "$CLIENTS" \
            -n "$REDIS_REQUESTS" -t get,set --csv 2>"$errors"); then
            line=$(python3 "$BENCH/databases_report.py" redis --errors "$errors" <<<"$csv")
        else
            line="errors=1 reason=redis-benchmark-failed"
        fi
        printf '%s\n' "$csv" >>"$OUT/redis-benchmark.log"
        cat "$errors" >>"$OUT/redis-benchmark.err"
        line+=" requests=$((2 * REDIS_REQUESTS))"
        ;;
    esac
    line=${line:-errors=1 reason=no-output}
    line+=" wall_s=$(awk "BEGIN { print $(($(date +%s%N) - started)) / 1e9 }")"
    if [[ -n $pid ]]; then
        kill -0 "$pid" 2>/dev/null || die "the proxy of path $path exited; see $OUT/"
        line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks) / $CLK_TCK }")"
    fi
    MEASURED=$line
}

paths_of() {
    local paths="direct pass"
    [[ $1 = pg ]] && paths+=" term"
    has_peer haproxy && paths+=" haproxy"
    echo "$paths"
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    rm -f "$OUT"/*.log "$OUT"/*.err "$OUT/raw.tsv"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    local port
    for port in "$PG_PORT" "$REDIS_PORT" "$ROUTER_PORT" "$HAPROXY_PG_PORT" "$HAPROXY_REDIS_PORT"; do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
    done
    build_sallyport
    [[ -n $SALLYPORT ]] || die "no sallyport to measure: $SALLYPORT_SKIP"
    CLK_TCK=$(getconf CLK_TCK)
    configure
    set_halt_poll

    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load > 0.5) }"; then
        log "warning: load average is $load; other work on this machine will distort the results"
    fi

    if wants pg; then start_postgres; fi
    if wants redis; then start_redis; fi
    start_router
    if has_peer haproxy; then start_haproxy; fi

    local suite path
    log "warming up…"
    for suite in $SUITES; do
        for path in $(paths_of "$suite"); do
            RUN_SECONDS=$WARMUP_SECONDS REDIS_REQUESTS=$((REDIS_REQUESTS / 10 + 1)) measure "$suite" "$path"
        done
    done
    log "measuring: suites $SUITES × $ROUNDS rounds (pgbench ${RUN_SECONDS}s a run; redis-benchmark $REDIS_REQUESTS requests per command)"
    local raw=$OUT/raw.tsv round line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for suite in $SUITES; do
            for path in $(paths_of "$suite"); do
                measure "$suite" "$path"
                line=$MEASURED
                printf '%s\t%s\t%s\t%s\n' "$round" "$suite" "$path" "$line" >>"$raw"
                log "$(printf '[round %s/%s] %-5s %-6s %s' "$round" "$ROUNDS" "$suite" "$path" "$line")"
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="sallyport and HAProxy on CPU $PROXY_CPU; PostgreSQL, redis-server, pgbench and redis-benchmark on CPU $LOAD_CPU (taskset)"
    {
        echo "# Databases through the router — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load"
        echo "- pinning: $pinning; proxy threads: $WORKERS (SALLYPORT_WORKERS, HAProxy nbthread)"
        echo "- idle: $(idle_policy)"
        echo "- method: $ROUNDS interleaved rounds; each runs every path of a suite in turn; medians"
        echo "- PostgreSQL: pgbench -S (select-only), $CLIENTS clients, 1 thread, ${RUN_SECONDS}s, scale $PG_SCALE, sslmode=require; tps without connection set-up"
        echo "- Redis: redis-benchmark --tls, $CLIENTS clients, $REDIS_REQUESTS requests per command (GET, SET), no pipelining"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 "$BENCH/databases_report.py" table "$raw" --header "$header" \
        --out "$OUT/results-databases.md"
    log ""
    log "written to $OUT/results-databases.md (raw runs: $raw) in $((SECONDS - began))s"
}

versions() {
    local v=("sallyport $(timeout 5 "$SALLYPORT" --version 2>/dev/null | head -1 || echo '?')")
    wants pg && v+=("$("$(pg_bin)/postgres" --version)" "$(pgbench --version)")
    wants redis && v+=("$(redis-server --version | cut -d' ' -f1-3)")
    has_peer haproxy && v+=("$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)")
    local IFS=';' joined
    joined="${v[*]}"
    echo "${joined//;/, }"
}

main "$@"
