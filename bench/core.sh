#!/usr/bin/env bash
# The core benchmarks of issue 2 (scenarios 1, 2 and 4 of issue 7), Tidings alone, against
# `tidings serve` (SQLite by default, or $STORE; default durability: fsync per group commit).
# The server runs on CPU $SERVER_CPU and the generator on CPU $GEN_CPU (taskset); the server is
# restarted on a fresh database before every scenario. The peers: bench/compare.sh.
#
#   bench/core.sh                 # every scenario, $RUNS times (default 2)
#   RUNS=1 bench/core.sh fanout   # some: fanout | topics | throughput | fanout-nosync | fsync
#
# fanout-nosync is a diagnostic, not an issue-2 scenario: scenario 1 against a hub started with
# --durability normal (no fsync per commit), to tell the disk's share of the latency from the
# hub's. fsync measures the disk itself: fdatasync latency of 4 KiB appends in the database's
# directory, what every durable commit waits for.
#
# Environment: PORT (18971), RUNS (2), EVENTS (1000, i.e. 10 s at 100/s), OUT
# (bench/results/core-DATE), STORE (empty: a fresh SQLite file per scenario; or e.g.
# postgres://postgres@127.0.0.1/tidings_bench, recreated per scenario, or
# redis://127.0.0.1:6379?prefix=tidings_bench, its keys deleted per scenario),
# and those of bench/lib.sh: SERVER_CPU (0), GEN_CPU (1), WAIT_QUIET (1: wait up to QUIET_MAX,
# 120 s, for the 1-minute load average to fall below 0.7 before each scenario, and log it),
# SKIP_BUILD (1: use the binaries already in target/release).
# Results: one JSON report per scenario and run under $OUT, and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18971}
RUNS=${RUNS:-2}
EVENTS=${EVENTS:-1000}
OUT=${OUT:-bench/results/core-$(date +%Y%m%d-%H%M%S)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fsync fanout topics throughput fanout-nosync)
mkdir -p "$OUT"

source bench/lib.sh
raise_fd_limit
check_port "$PORT"
build_binaries
machine_info "$OUT/machine.txt"
BASE=http://127.0.0.1:$PORT
# Scenario 4 is per store: name its reports after the store.
STORE_NAME=$(case $STORE in "") echo sqlite ;; *) echo "${STORE%%:*}" ;; esac)

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
            start_tidings "$PORT"
            gen fanout -n 1000 -m "$EVENTS" --rate 100 --subscribe-url "$SUB" --publish-url "$PUB" \
                --label "fanout-1000 #$run" --out "$OUT/fanout-1000-run$run.json"
            ;;
        topics)
            # (2) N subscribers on N distinct topics, events to only 10 of them: 100 against 10,000.
            for n in 100 10000; do
                wait_quiet "topics-$n run $run"
                start_tidings "$PORT"
                gen fanout -n "$n" --topics "$n" --topic-mode active --active 10 -m "$EVENTS" --rate 100 \
                    --subscribe-url "$SUB" --publish-url "$PUB" \
                    --label "topics-$n (10 active) #$run" --out "$OUT/topics-$n-run$run.json"
            done
            ;;
        throughput)
            # (3) 64 concurrent publishers, acknowledged durable publishes per second.
            wait_quiet "throughput-64 $STORE_NAME run $run"
            start_tidings "$PORT"
            gen throughput -c 64 -d 10 --warmup 2 --publish-url "$PUB" \
                --label "throughput-64 $STORE_NAME #$run" --out "$OUT/throughput-64-$STORE_NAME-run$run.json"
            ;;
        fanout-nosync)
            # Diagnostic: scenario (1) without fsync per commit.
            wait_quiet "fanout-1000-nosync run $run"
            start_tidings "$PORT" --durability normal
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
