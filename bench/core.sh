#!/usr/bin/env bash
# The core benchmarks of issue 2, against `tidings serve` (SQLite store, default durability:
# fsync per group commit). The server runs on CPU $SERVER_CPU and the generator on CPU $GEN_CPU
# (taskset); the server is restarted on a fresh database before every scenario.
#
#   bench/core.sh                 # every scenario, $RUNS times (default 2)
#   RUNS=1 bench/core.sh fanout   # some: fanout | topics | throughput | fanout-nosync | fsync
#
# fanout-nosync is a diagnostic, not an issue-2 scenario: scenario 1 against a hub started with
# --durability normal (no fsync per commit), to tell the disk's share of the latency from the
# hub's. fsync measures the disk itself: fdatasync latency of 4 KiB appends in the database's
# directory, what every durable commit waits for.
#
# Environment: PORT (18971), RUNS (2), SERVER_CPU (0), GEN_CPU (1), EVENTS (1000, i.e. 10 s
# at 100/s), OUT (bench/results/core-DATE), WAIT_QUIET (1: wait up to 5 min for the 1-minute
# load average to fall below 0.7 before each scenario), SKIP_BUILD (1: use the binaries already
# in target/release).
# Results: one JSON report per scenario and run under $OUT, and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18971}
RUNS=${RUNS:-2}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
EVENTS=${EVENTS:-1000}
WAIT_QUIET=${WAIT_QUIET:-1}
OUT=${OUT:-bench/results/core-$(date +%Y%m%d-%H%M%S)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fsync fanout topics throughput fanout-nosync)

# Subscribers need one descriptor each, on both sides.
ulimit -n "$(ulimit -Hn)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p tidings -p tidings-bench
fi
BIN=$PWD/target/release
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tidings-bench.XXXXXX)
BASE=http://127.0.0.1:$PORT
SERVER_PID=

if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
    echo "port $PORT is already in use: set PORT" >&2
    exit 1
fi

{
    echo "date: $(date -Is)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "kernel: $(uname -r)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "fd limit: $(ulimit -n)"
    echo "server cpu: $SERVER_CPU, generator cpu: $GEN_CPU"
} >"$OUT/machine.txt"
cat "$OUT/machine.txt"

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID"
        for _ in $(seq 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}
cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap cleanup EXIT

# start_server [extra flags of tidings serve]
start_server() {
    stop_server
    rm -f "$WORK"/tidings.db*
    taskset -c "$SERVER_CPU" "$BIN/tidings" serve --listen "127.0.0.1:$PORT" \
        --store "$WORK/tidings.db" "$@" >>"$OUT/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do
        if curl -fs "$BASE/healthz" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "the server did not start; see $OUT/server.log" >&2
    exit 1
}

wait_quiet() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$WAIT_QUIET" = 1 ]; then
        for _ in $(seq 60); do
            awk -v l="$load" 'BEGIN { exit !(l < 0.7) }' && break
            echo "load average $load: waiting for a quiet machine" >&2
            sleep 5
            load=$(cut -d' ' -f1 /proc/loadavg)
        done
    fi
    echo "$1: load average $(cat /proc/loadavg)" | tee -a "$OUT/load.txt"
}

gen() {
    taskset -c "$GEN_CPU" "$BIN/tidings-bench" "$@" --server-pid "$SERVER_PID"
}

SUB="$BASE/.well-known/mercure?topic=bench/{topic}"
PUB="$BASE/.well-known/mercure"

for run in $(seq "$RUNS"); do
    for scenario in "${SCENARIOS[@]}"; do
        case $scenario in
        fsync)
            wait_quiet "fsync run $run"
            taskset -c "$SERVER_CPU" "$BIN/tidings-bench" fsync --dir "$WORK" --count 500 \
                --label "fdatasync 4 KiB #$run" --out "$OUT/fsync-run$run.json"
            ;;
        fanout)
            # (1) 1,000 subscribers on one topic, 100 events/s.
            wait_quiet "fanout-1000 run $run"
            start_server
            gen fanout -n 1000 -m "$EVENTS" --rate 100 --subscribe-url "$SUB" --publish-url "$PUB" \
                --label "fanout-1000 #$run" --out "$OUT/fanout-1000-run$run.json"
            ;;
        topics)
            # (2) N subscribers on N distinct topics, events to only 10 of them: 100 against 10,000.
            for n in 100 10000; do
                wait_quiet "topics-$n run $run"
                start_server
                gen fanout -n "$n" --topics "$n" --topic-mode active --active 10 -m "$EVENTS" --rate 100 \
                    --subscribe-url "$SUB" --publish-url "$PUB" \
                    --label "topics-$n (10 active) #$run" --out "$OUT/topics-$n-run$run.json"
            done
            ;;
        throughput)
            # (3) 64 concurrent publishers, acknowledged durable publishes per second.
            wait_quiet "throughput-64 run $run"
            start_server
            gen throughput -c 64 -d 10 --warmup 2 --publish-url "$PUB" \
                --label "throughput-64 #$run" --out "$OUT/throughput-64-run$run.json"
            ;;
        fanout-nosync)
            # Diagnostic: scenario (1) without fsync per commit.
            wait_quiet "fanout-1000-nosync run $run"
            start_server --durability normal
            gen fanout -n 1000 -m "$EVENTS" --rate 100 --subscribe-url "$SUB" --publish-url "$PUB" \
                --label "fanout-1000, durability normal #$run" --out "$OUT/fanout-1000-nosync-run$run.json"
            ;;
        *)
            echo "unknown scenario $scenario (fanout | topics | throughput | fanout-nosync | fsync)" >&2
            exit 2
            ;;
        esac
        stop_server
    done
done

"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
echo "results in $OUT"
