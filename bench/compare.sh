#!/usr/bin/env bash
# Issue 7: Tidings side by side with its peers, in one run, with one generator.
#   tidings  target/release/tidings serve (a fresh SQLite file per run, or $STORE)
#   nchan    Debian's nginx-light + libnginx-mod-nchan (installed with apt-get when missing)
#   fastapi  bench/peers/fastapi/app.py: the seeds' FastAPI + sse-starlette + uvicorn design,
#            installed from PyPI into bench/.venv
# Every run starts its server afresh, pinned to CPU $SERVER_CPU, the generator on $GEN_CPU.
#
#   bench/compare.sh                      # every scenario, every server, then the plots
#   bench/compare.sh fanout               # some scenarios: fanout | idle | storm | topics | throughput
#   SERVERS="tidings nchan" bench/compare.sh storm
#   TIDINGS_BASE_BIN=/path/to/old/tidings SERVERS="tidings-base tidings nchan" bench/compare.sh fanout
#                                         # an older build of Tidings beside this one, in one run
#
# Scenarios:
#   fanout  (1) one topic, N = 100, 1,000 (500 events at 100/s) and 10,000 subscribers (100 events
#           at 10/s: the same 100,000 deliveries/s; 100/s would ask a million per second)
#   idle    (3) $IDLE_N idle subscribers (50,000, or as many as the fd limit allows: one
#           descriptor each in the server and in the generator, 200 kept for the rest), the
#           server's RSS per subscriber; then 3 events at 1/s to check every stream is alive
#   storm   (5) 5,000 subscribers on 50 topics, 200 events/s round robin for 20 s; every
#           subscriber drops its connection at 5, 10 and 15 s and reconnects at once with
#           Last-Event-ID; lost and duplicated events counted
#   topics  $TOPICS_N subscribers (10,000) on as many topics, 200 events/s to random topics for
#           10 s: each publish reaches one subscriber, so the CPU per delivery is the CPU per publish
#   throughput  64 concurrent keep-alive publishers, as fast as acknowledgments come, 10 s after a
#           2 s warm-up (random topics of 100): acknowledged publishes/s and server CPU per publish
#
# Environment: SERVERS ("tidings nchan fastapi"; also tidings-base: $TIDINGS_BASE_BIN, and
# tidings-normal: --durability normal), PORT
# (18975), ROUNDS (1), FANOUT_N ("100 1000 10000"), TOPICS_N (10000), IDLE_N (50,000 or the fd limit less 200), STORM_N (5000), OUT
# (bench/results/compare-DATE), PLOTS (bench/plots: where the PNGs go; empty for none), and
# those of bench/lib.sh (SERVER_CPU, GEN_CPU, WAIT_QUIET, QUIET_MAX, NOFILE, SKIP_BUILD, STORE).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18975}
ROUNDS=${ROUNDS:-1}
SERVERS=${SERVERS:-tidings nchan fastapi}
FANOUT_N=${FANOUT_N:-100 1000 10000}
IDLE_N=${IDLE_N:-}
STORM_N=${STORM_N:-5000}
TOPICS_N=${TOPICS_N:-10000}
PLOTS=${PLOTS-bench/plots}
OUT=${OUT:-bench/results/compare-$(date +%Y%m%d-%H%M%S)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(fanout idle storm)
mkdir -p "$OUT"

source bench/lib.sh
raise_fd_limit
if [ -z "$IDLE_N" ]; then
    IDLE_N=$(($(ulimit -n) - 200))
    [ "$IDLE_N" -le 50000 ] || IDLE_N=50000
fi
check_port "$PORT"
build_binaries
for s in $SERVERS; do
    case $s in
    nchan) install_nchan ;;
    fastapi) setup_venv ;;
    esac
done
[ -z "$PLOTS" ] || setup_venv
machine_info "$OUT/machine.txt"

# run SERVER NAME MODE GENERATOR-ARGS...: one measured run (tidings-bench fanout or throughput)
# on a freshly started server.
run() {
    local server=$1 name=$2 mode=$3
    shift 3
    wait_quiet "$server $name"
    start_server "$server" "$PORT"
    endpoints "$server" "$PORT"
    local target=("${PUB_ARGS[@]}")
    if [ "$mode" = fanout ]; then
        target+=(--subscribe-url "$SUB_URL")
    fi
    gen "$mode" "${target[@]}" "$@" --label "$server $name" --out "$OUT/$name-$server.json" ||
        echo "$server $name: the generator failed" | tee -a "$OUT/failures.txt"
    stop_server
}

for round in $(seq "$ROUNDS"); do
    sfx=$([ "$ROUNDS" = 1 ] || echo "-r$round")
    for scenario in "${SCENARIOS[@]}"; do
        case $scenario in
        fanout)
            for n in $FANOUT_N; do
                if [ "$n" -gt 1000 ]; then
                    events=100 rate=10
                else
                    events=500 rate=100
                fi
                for server in $SERVERS; do
                    run "$server" "fanout-$n$sfx" fanout -n "$n" -m "$events" --rate "$rate" \
                        --drain-timeout 120
                done
            done
            ;;
        idle)
            for server in $SERVERS; do
                run "$server" "idle-$IDLE_N$sfx" fanout -n "$IDLE_N" -m 3 --rate 1 --settle 3 \
                    --connect-timeout 300 --drain-timeout 120
            done
            ;;
        storm)
            for server in $SERVERS; do
                run "$server" "storm-$STORM_N$sfx" fanout -n "$STORM_N" --topics 50 \
                    --topic-mode round-robin -m 4000 --rate 200 --drop-at 5,10,15 \
                    --drain-timeout 30
            done
            ;;
        topics)
            for server in $SERVERS; do
                run "$server" "topics-$TOPICS_N$sfx" fanout -n "$TOPICS_N" --topics "$TOPICS_N" \
                    --topic-mode random -m 2000 --rate 200 --connect-timeout 300 --drain-timeout 60
            done
            ;;
        throughput)
            for server in $SERVERS; do
                run "$server" "throughput-64$sfx" throughput -c 64 -d 10 --warmup 2 \
                    --topics 100 --topic-mode random
            done
            ;;
        *)
            echo "unknown scenario $scenario (fanout | idle | storm | topics | throughput)" >&2
            exit 2
            ;;
        esac
    done
done

"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
if [ -n "$PLOTS" ]; then
    "$VENV/bin/python" bench/plot.py "$OUT" --plots "$PLOTS" | tee "$OUT/compare.md"
fi
echo "results in $OUT"
