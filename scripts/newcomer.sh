#!/usr/bin/env bash
# A newcomer's first hour, scripted (`make newcomer`): a fresh clone of what is committed, in a
# temporary folder; `make demo` there (its own setup included); a hand deployment of broker,
# worker and device from `splitmq config example`; a TLS site from `splitmq broker init` with a
# worker, a device, the monitor and the exporter; Ctrl-C on every long-running command. Each
# step prints one line; a failing step prints its cause in one line and the script exits 1.
# It installs a fresh virtualenv, so it takes minutes: it is not part of `make test`.
# KEEP=1 keeps the temporary folder (and every step's log) for a look afterwards; QUICK=1 skips
# the clone and the demo and runs the rest with this checkout's .venv (for working on it).
set -u
# Job control: without it bash starts background commands with SIGINT ignored, and a Ctrl-C
# sent to them would test nothing.
set -m

SRC=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/splitmq-newcomer-XXXXXX")
chmod 711 "$WORK" # mosquitto, started by root, runs as its own account and must reach the site
LOGS="$WORK/logs"
mkdir -p "$LOGS"
CLONE="$WORK/splitmq"
BIN="$CLONE/.venv/bin"
NEED_GB=${NEED_GB:-8}
declare -A PIDS=()

cleanup() {
    for name in "${!PIDS[@]}"; do kill -INT "${PIDS[$name]}" 2>/dev/null; done
    wait 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "newcomer: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

fail() { echo "newcomer: FAIL $1: $2" >&2; exit 1; }

cause() { # the last non-empty line of a log: in this project, an error's one line
    local line
    # make's own closing lines ("make: *** [demo] Error 1") only say that something failed
    line=$(grep -v -e '^[[:space:]]*$' -e '^make\(\[[0-9]*\]\)\?: ' "$1" 2>/dev/null | tail -n 1)
    echo "${line:-no output} (log: $1)"
}

step() { # step NAME COMMAND...: run it in the foreground; it must exit 0
    local name=$1 log="$LOGS/$1.log"
    shift
    if "$@" >"$log" 2>&1; then echo "newcomer: ok   $name"; else fail "$name" "$(cause "$log")"; fi
}

start() { # start NAME COMMAND...: run it in the background
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>&1 &
    PIDS[$name]=$!
}

wait_for() { # wait_for NAME TEXT [SECONDS]: until NAME's output shows TEXT
    local name=$1 text=$2 limit=${3:-120} waited=0
    until grep -qF -- "$text" "$LOGS/$name.log" 2>/dev/null; do
        kill -0 "${PIDS[$name]}" 2>/dev/null || fail "$name" "exited before '$text': $(cause "$LOGS/$name.log")"
        [ "$waited" -ge "$limit" ] && fail "$name" "no '$text' within $limit s: $(cause "$LOGS/$name.log")"
        sleep 1
        waited=$((waited + 1))
    done
    echo "newcomer: ok   $name: $text"
}

interrupt() { # interrupt NAME: Ctrl-C; it must stop within 30 s, exit 0 or 130, no traceback
    local name=$1 pid=${PIDS[$1]} code waited=0
    kill -INT "$pid" 2>/dev/null || fail "$name" "was no longer running: $(cause "$LOGS/$name.log")"
    while kill -0 "$pid" 2>/dev/null; do
        [ "$waited" -ge 30 ] && { kill -KILL "$pid"; fail "$name" "still running 30 s after Ctrl-C"; }
        sleep 1
        waited=$((waited + 1))
    done
    wait "$pid"
    code=$?
    unset "PIDS[$name]"
    grep -q "Traceback" "$LOGS/$name.log" && fail "$name" "a traceback on Ctrl-C (log: $LOGS/$name.log)"
    [ "$code" = 0 ] || [ "$code" = 130 ] || fail "$name" "exit code $code on Ctrl-C: $(cause "$LOGS/$name.log")"
    echo "newcomer: ok   $name stops on Ctrl-C (exit $code)"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

records() { [ -f "$1" ] && wc -l <"$1" || echo 0; }

# 1. A fresh clone and the first command of the README.
if [ "${QUICK:-0}" = 1 ]; then
    BIN="$SRC/.venv/bin"
    step demo "$BIN/splitmq" demo --devices 2 --requests 20 # what `make demo` runs
else
    # A fresh venv holds torch with its CUDA libraries: about 6 GB here.
    free_kb=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
    [ "$free_kb" -ge $((NEED_GB * 1024 * 1024)) ] ||
        fail disk "a fresh venv needs about $NEED_GB GB and $WORK has $((free_kb / 1024)) MB free (QUICK=1 reuses this checkout's venv)"
    step clone git clone --quiet "$SRC" "$CLONE"
    step make-demo make --no-print-directory -C "$CLONE" demo
fi
start demo-interrupted "$BIN/splitmq" demo --devices 1 --requests 100000
wait_for demo-interrupted "req " 300
interrupt demo-interrupted

# 2. By hand: a broker, a worker and a device from the example configs.
cd "$WORK" || fail setup "cannot enter $WORK"
PORT=$(free_port)
start broker "$BIN/splitmq" broker --port "$PORT"
wait_for broker "broker running at mqtt://127.0.0.1:$PORT"
step worker-example sh -c "'$BIN/splitmq' config example worker > worker.yaml && '$BIN/splitmq' config check worker.yaml"
step device-example sh -c "'$BIN/splitmq' config example device > device.yaml && '$BIN/splitmq' config check device.yaml"
start worker "$BIN/splitmq" worker --config worker.yaml --port "$PORT"
wait_for worker "serving on mqtt://127.0.0.1:$PORT" 300
step device "$BIN/splitmq" device --config device.yaml --port "$PORT" --requests 5 --jsonl hand.jsonl -q
[ "$(records hand.jsonl)" = 5 ] || fail device "wrote $(records hand.jsonl) records, not 5"
start device-interrupted "$BIN/splitmq" device --config device.yaml --port "$PORT" --jsonl long.jsonl
for _ in $(seq 120); do [ "$(records long.jsonl)" -ge 2 ] && break; sleep 1; done
[ "$(records long.jsonl)" -ge 2 ] || fail device-interrupted "no records: $(cause "$LOGS/device-interrupted.log")"
interrupt device-interrupted
interrupt worker
interrupt broker

# 3. A secure site: `broker init`, then every node over TLS with its own login.
TLS_PORT=$(free_port)
METRICS_PORT=$(free_port)
step broker-init "$BIN/splitmq" broker init site --device cam --worker w --monitor mon --port "$TLS_PORT"
start tls-broker "$BIN/splitmq" broker --config site/mosquitto.conf --port "$TLS_PORT"
wait_for tls-broker "broker running at mqtts://127.0.0.1:$TLS_PORT"
start tls-worker "$BIN/splitmq" worker --config site/users/w.yaml
wait_for tls-worker "serving on mqtts://127.0.0.1:$TLS_PORT" 300
step tls-device "$BIN/splitmq" device --config site/users/cam.yaml --requests 3 --jsonl tls.jsonl -q
[ "$(records tls.jsonl)" = 3 ] || fail tls-device "wrote $(records tls.jsonl) records, not 3"
step monitor-once sh -c "'$BIN/splitmq' monitor --config site/users/mon.yaml --once --wait 3 --json | grep -q '\"w\"'"
start monitor "$BIN/splitmq" monitor --config site/users/mon.yaml --json --refresh 1
wait_for monitor "{" 60
interrupt monitor
start exporter "$BIN/splitmq" exporter --config site/users/mon.yaml --listen "127.0.0.1:$METRICS_PORT"
wait_for exporter "exporter serving http://127.0.0.1:$METRICS_PORT/metrics" 60
step metrics sh -c "sleep 3; python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$METRICS_PORT/metrics', timeout=10).read().decode())\" | grep -q '^splitmq_'"
interrupt exporter
interrupt tls-worker
interrupt tls-broker
echo "newcomer: every step passed"
