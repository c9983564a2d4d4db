#!/usr/bin/env bash
# Binary upgrades under load (issue 10): sallyport in front of an nginx HTTP backend and a UDP
# echo server, while wrk drives HTTP/1.1 (keep-alive connections, and a second wrk with a new
# connection per request), h2load drives HTTP/2 over TLS and h3-load (bench/tools) HTTP/3 on
# the same TLS entrypoint (`http3`), and a UDP client sends one numbered datagram a millisecond.
# During the run, `sallyport upgrade --pid` is run BENCH_UPGRADES times, evenly spaced; each
# waits for the new process to serve, and the next one upgrades that one. Printed and written
# to $OUT/results-upgrade.md: requests, non-2xx answers, wrk's socket errors (connect errors
# are refused connections), h2load's failed/errored/timed-out requests, h3-load's errors by
# kind and reconnects (a request the server refused with GOAWAY is sent again on a new
# connection, as a browser does, and is not an error), the upgrades' outcomes, and UDP
# datagrams sent, answered and lost.
#
# Knobs (environment):
#   BENCH_DURATION=24      seconds of load
#   BENCH_UPGRADES=3       upgrades during the load
#   BENCH_CONNECTIONS=32   wrk keep-alive connections (the per-request wrk uses 8)
#   BENCH_H2_CONNECTIONS=8 h2load connections (10 streams each)
#   BENCH_H3_CONNECTIONS=8 h3-load connections (4 streams each)
#   BENCH_GRACE=3s         the entrypoints' lifeCycle.graceTimeOut (each old process drains this long at most)
#   BENCH_WORKERS=1        SALLYPORT_WORKERS
#   BENCH_PORT_BASE=19700  ports BASE..BASE+4 on 127.0.0.1 (BASE+4: TCP and UDP)
#   BENCH_OUT=bench/out/upgrade
#   SALLYPORT_BIN=         default: target/release/sallyport, else target/debug/sallyport
#   h3-load: target/release/h3-load, built (cargo build --release -p sallyport-bench-tools) if missing
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/bench
OUT=${BENCH_OUT:-$BENCH/out/upgrade}
# shellcheck source=bench/lib.sh
. "$BENCH/lib.sh"

DURATION=${BENCH_DURATION:-24}
UPGRADES=${BENCH_UPGRADES:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
H2_CONNECTIONS=${BENCH_H2_CONNECTIONS:-8}
H3_CONNECTIONS=${BENCH_H3_CONNECTIONS:-8}
GRACE=${BENCH_GRACE:-3s}
WORKERS=${BENCH_WORKERS:-1}
PORT_BASE=${BENCH_PORT_BASE:-19700}
# shellcheck disable=SC2034 # read by start() in lib.sh: no CPU pinning here
PIN=0
WEB=$PORT_BASE BACKEND=$((PORT_BASE + 1)) ECHO=$((PORT_BASE + 2)) UDP=$((PORT_BASE + 3))
SECURE=$((PORT_BASE + 4))
SALLYPORT=${SALLYPORT_BIN:-}
if [[ -z $SALLYPORT ]]; then
    for candidate in "$ROOT/target/release/sallyport" "$ROOT/target/debug/sallyport"; do
        if [[ -x $candidate ]]; then SALLYPORT=$candidate; break; fi
    done
fi
[[ -x $SALLYPORT ]] || die "no sallyport binary (cargo build -p sallyport, or set SALLYPORT_BIN)"
for tool in wrk h2load nginx python3 openssl; do command -v "$tool" >/dev/null || die "$tool is needed"; done
TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/release
[[ -x $TOOLS/h3-load ]] || build_tools

# The processes that took over, stopped by pid at the end like the ones started here.
SUCCESSORS=()
cleanup() {
    local pid
    for pid in "${SUCCESSORS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    stop_all
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$OUT"
mkdir -p "$OUT/nginx"
ecdsa_certificate localhost

cat >"$OUT/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $OUT/nginx;
    proxy_temp_path $OUT/nginx;
    fastcgi_temp_path $OUT/nginx;
    uwsgi_temp_path $OUT/nginx;
    scgi_temp_path $OUT/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BACKEND;
        location / { return 200 "ok\n"; }
    }
}
EOF

cat >"$OUT/udp_echo.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(data, peer)
EOF

# One client, one source port: a datagram a millisecond for the whole run, answers counted.
cat >"$OUT/udp_client.py" <<'EOF'
import socket, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("127.0.0.1", port))
s.settimeout(0.5)
answered = set()
done = threading.Event()
def receive():
    while not done.is_set():
        try:
            answered.add(int(s.recv(64)))
        except (socket.timeout, ConnectionRefusedError, ValueError):
            pass
t = threading.Thread(target=receive, daemon=True)
t.start()
sent, start = 0, time.monotonic()
while time.monotonic() - start < seconds:
    try:
        s.send(str(sent).encode())
    except ConnectionRefusedError:
        pass
    sent += 1
    time.sleep(0.001)
time.sleep(0.5)
done.set()
t.join()
lost = sorted(set(range(sent)) - answered)
# Runs of consecutive lost datagrams: where they were lost, and how many.
runs, first = [], None
for i, n in enumerate(lost):
    if first is None:
        first = n
    if i + 1 == len(lost) or lost[i + 1] != n + 1:
        runs.append(f"{first}-{n}" if n != first else f"{n}")
        first = None
print(f"sent={sent} answered={len(answered)} lost={len(lost)} runs={','.join(runs[:20]) or '-'}")
EOF

cat >"$OUT/static.yml" <<EOF
entryPoints:
  web:
    address: "127.0.0.1:$WEB"
    transport:
      lifeCycle:
        graceTimeOut: $GRACE
  websecure:
    address: "127.0.0.1:$SECURE"
    http3: {}
    transport:
      lifeCycle:
        graceTimeOut: $GRACE
  udp:
    address: "127.0.0.1:$UDP/udp"
    transport:
      lifeCycle:
        graceTimeOut: $GRACE
providers:
  file:
    filename: "$OUT/dynamic.yml"
log:
  level: INFO
EOF

cat >"$OUT/dynamic.yml" <<EOF
http:
  routers:
    r: {rule: "PathPrefix(\`/\`)", entryPoints: [web], service: s}
    rs: {rule: "PathPrefix(\`/\`)", entryPoints: [websecure], service: s, tls: {}}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:$BACKEND"}]}}
tls:
  stores:
    default:
      defaultCertificate: {certFile: "$CERT", keyFile: "$KEY"}
udp:
  routers:
    u: {entryPoints: [udp], service: e}
  services:
    e: {loadBalancer: {servers: [{address: "127.0.0.1:$ECHO"}]}}
EOF

start nginx 0 nginx -c "$OUT/nginx/nginx.conf"
start udp-echo 0 python3 "$OUT/udp_echo.py" "$ECHO"
# SALLYPORT_* variables are static configuration to sallyport: SALLYPORT_BIN is not.
start sallyport 0 env -u SALLYPORT_BIN SALLYPORT_WORKERS="$WORKERS" "$SALLYPORT" --config "$OUT/static.yml"
PID=$LAST_PID
FIRST_PID=$PID
deadline=$((SECONDS + 30))
until curl -fsS -o /dev/null "http://127.0.0.1:$WEB/" &&
    curl -fsSk -o /dev/null "https://127.0.0.1:$SECURE/" &&
    "$TOOLS/h3-load" --connect "127.0.0.1:$SECURE" --sni localhost --insecure --once >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "sallyport did not serve; see $OUT/sallyport.log"
    sleep 0.2
done
log "sallyport $SALLYPORT (pid $PID) serves; $DURATION s of load, $UPGRADES upgrades"

start wrk-keepalive 1 wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "http://127.0.0.1:$WEB/"
start wrk-close 1 wrk -t1 -c8 -d"${DURATION}s" -H "Connection: close" "http://127.0.0.1:$WEB/"
start h2load 1 h2load -t1 -c"$H2_CONNECTIONS" -m10 -D"$DURATION" "https://127.0.0.1:$SECURE/"
start h3-load 1 "$TOOLS/h3-load" --connect "127.0.0.1:$SECURE" --sni localhost --insecure \
    --duration "$DURATION" --connections "$H3_CONNECTIONS" --streams 4 --timeout-ms 5000
start udp-client 1 python3 "$OUT/udp_client.py" "$UDP" "$DURATION"
LOAD_PIDS=("${PIDS[@]: -5}")

: >"$OUT/upgrades.txt"
spacing=$((DURATION / (UPGRADES + 1)))
for i in $(seq "$UPGRADES"); do
    sleep "$spacing"
    started=$(date +%s.%N)
    if answer=$("$SALLYPORT" upgrade --pid "$PID" 2>&1); then
        new=$(grep -o 'new process [0-9]*' <<<"$answer" | grep -o '[0-9]*$')
        took=$(echo "$(date +%s.%N) - $started" | bc)
        SUCCESSORS+=("$new")
        echo "upgrade $i: pid $PID -> $new, ready after ${took} s" | tee -a "$OUT/upgrades.txt" >&2
        PID=$new
    else
        echo "upgrade $i: FAILED: $answer" | tee -a "$OUT/upgrades.txt" >&2
    fi
done
for pid in "${LOAD_PIDS[@]}"; do wait "$pid" || true; done
# Every replaced process has drained and exited by now (the last upgrade was a quarter of
# the run ago, longer than graceTimeOut with the defaults).
still=0
for pid in "$FIRST_PID" "${SUCCESSORS[@]}"; do
    [[ $pid = "$PID" ]] && continue
    if kill -0 "$pid" 2>/dev/null; then still=$((still + 1)); fi
done

# wrk's summary: requests, non-2xx answers, socket errors (connect = refused or failed).
summary() {
    local f=$OUT/$1.log
    local requests non2xx errors
    requests=$(awk '/requests in/ {print $1}' "$f")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$f")
    errors=$(grep -o 'Socket errors:.*' "$f" || true)
    printf '| %s | %s | %s | %s |\n' "$2" "${requests:-?}" "${non2xx:-0}" "${errors:-Socket errors: none}"
}
# h2load's summary: requests done, and failed ones (h2load's `failed` includes the errored
# and timed-out ones).
h2_summary() {
    local line
    line=$(grep -m1 '^requests:' "$OUT/h2load.log" || echo "requests: ? total")
    awk -v c="$H2_CONNECTIONS" '{
        gsub(",", "")
        for (i = 2; i < NF; i += 2) v[$(i + 1)] = $i
        printf "| HTTP/2 over TLS (h2load), %s connections x 10 streams | %s | %s | succeeded %s, errored %s, timeout %s |\n", c, v["done"], v["failed"], v["succeeded"], v["errored"], v["timeout"]
    }' <<<"$line"
}
# h3-load's key=value line: answered and failed requests, GOAWAY retries, reconnects.
h3_summary() {
    local line
    line=$(grep -m1 '^responses=' "$OUT/h3-load.log" || echo "responses=?")
    awk -v c="$H3_CONNECTIONS" '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "| HTTP/3 (h3-load), %s connections x 4 streams | %s | %s | non-2xx %s, connect %s, stream %s, timeout %s; sent again after GOAWAY %s (refused %s, unanswered at a graceful close %s); reconnects %s |\n", c, v["responses"] + v["errors"], v["errors"] + v["non2xx"], v["non2xx"], v["connect"], v["stream"], v["timeout"], v["goaway"] + v["unprocessed"], v["goaway"], v["unprocessed"], v["reconnects"]
    }' <<<"$line"
}
{
    echo "## Binary upgrades under load ($(date -u +%Y-%m-%d))"
    echo
    echo "- binary: $SALLYPORT ($("$SALLYPORT" --version 2>/dev/null)); SALLYPORT_WORKERS=$WORKERS; graceTimeOut $GRACE"
    echo "- load: ${DURATION} s; wrk -t1 -c$CONNECTIONS keep-alive; wrk -t1 -c8 with Connection: close (a new connection per request); h2load -t1 -c$H2_CONNECTIONS -m10 (HTTP/2 over TLS); h3-load --connections $H3_CONNECTIONS --streams 4 (HTTP/3, 5 s per-request time-out); UDP: one client, 1 datagram/ms through a UDP router to an echo server"
    echo "- host: $(nproc) CPUs shared with other work; load average at start $(cut -d' ' -f1 /proc/loadavg)"
    echo
    echo "### Upgrades"
    echo
    sed 's/^/- /' "$OUT/upgrades.txt"
    echo "- replaced processes still running at the end: $still"
    echo
    echo "### HTTP"
    echo
    echo "| load | requests | non-2xx | socket errors (connect = refused) |"
    echo "|---|---:|---:|---|"
    summary wrk-keepalive "keep-alive, $CONNECTIONS connections"
    summary wrk-close "new connection per request, 8 at once"
    echo
    echo "| load | requests | failed | of which |"
    echo "|---|---:|---:|---|"
    h2_summary
    h3_summary
    echo
    echo "### UDP"
    echo
    echo "- $(tail -1 "$OUT/udp-client.log")"
} | tee "$OUT/results-upgrade.md"
