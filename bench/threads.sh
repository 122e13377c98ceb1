#!/usr/bin/env bash
# Where a large fan-out's CPU goes, per thread of the hub: one topic, $SUBS subscribers,
# $EVENTS events at $RATE/s, with the hub's runtime given 1 worker and then 2
# (TOKIO_WORKER_THREADS), each on a fresh SQLite file. The hub may use every CPU in
# $SERVER_CPUS; the generator runs on $GEN_CPU. Before and after the run, each thread's user and
# system ticks are read from /proc/PID/task/*/stat; the report lists the difference per thread
# (name, TID) and the generator's own latency report. With STRACE=1, strace also follows the
# hub during the run and the report counts its socket writes (sendto, sendmsg, writev: the
# deliveries and the answers) per thread.
#
#   bench/threads.sh                 # SUBS=5000 EVENTS=1000 RATE=100
#
# Environment: PORT (18975), SUBS, EVENTS, RATE, WORKERS ("1 2"), SERVER_CPUS (0,1), OUT
# (bench/results/threads-DATE), and those of bench/lib.sh (SKIP_BUILD=1, TIDINGS_BIN, GEN_CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18975}
SUBS=${SUBS:-5000}
EVENTS=${EVENTS:-1000}
RATE=${RATE:-100}
WORKERS=${WORKERS:-1 2}
OUT=${OUT:-bench/results/threads-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

source bench/lib.sh
SERVER_CPU=${SERVER_CPUS:-0,1}
raise_fd_limit
check_port "$PORT"
build_binaries
machine_info "$OUT/machine.txt"
BASE=http://127.0.0.1:$PORT

# ticks PID: "TID NAME TICKS" per thread (utime + stime, in clock ticks).
ticks() {
    for stat in /proc/"$1"/task/*/stat; do
        # The name sits in parentheses and may hold spaces: split around the last ')'.
        awk '{ line = $0; i = index(line, "(" ); j = 0
               for (k = length(line); k > 0; k--) if (substr(line, k, 1) == ")") { j = k; break }
               name = substr(line, i + 1, j - i - 1); gsub(/ /, "_", name)
               split(substr(line, j + 2), f, " ")
               print $1, name, f[12] + f[13] }' "$stat" 2>/dev/null || true
    done
}

for w in $WORKERS; do
    wait_quiet "threads workers=$w"
    TOKIO_WORKER_THREADS=$w start_tidings "$PORT"
    ticks "$SERVER_PID" | sort >"$WORK/before"
    gen fanout -n "$SUBS" -m "$EVENTS" --rate "$RATE" \
        --subscribe-url "$BASE/.well-known/mercure?topic=bench/{topic}" \
        --publish-url "$BASE/.well-known/mercure" \
        --label "fanout-$SUBS workers=$w" --out "$OUT/fanout-$SUBS-workers$w.json" >"$OUT/gen-workers$w.txt" 2>&1 &
    gen_pid=$!
    if [ "${STRACE:-0}" = 1 ]; then
        strace -f -qq -e trace=sendto,sendmsg,writev -o "$WORK/strace" -p "$SERVER_PID" &
        strace_pid=$!
    fi
    # The subscribers connect first; sample while the events flow, then once they are done.
    wait "$gen_pid"
    ticks "$SERVER_PID" | sort >"$WORK/after"
    if [ "${STRACE:-0}" = 1 ]; then
        kill "$strace_pid" 2>/dev/null || true
        wait "$strace_pid" 2>/dev/null || true
    fi
    {
        echo "## workers=$w: CPU seconds per hub thread over the run ($SUBS subscribers, $EVENTS events at $RATE/s)"
        join -a2 -e0 -o 2.1,2.2,1.3,2.3 "$WORK/before" "$WORK/after" |
            awk -v hz="$(getconf CLK_TCK)" '{ d = ($4 - $3) / hz; if (d > 0) printf "%-8s %-20s %8.2f s\n", $1, $2, d }' |
            sort -k3 -rn
        if [ "${STRACE:-0}" = 1 ]; then
            echo "socket writes (sendto, sendmsg, writev) per thread (strace -f):"
            awk '{ n[$1]++ } END { for (t in n) printf "%-8s %8d\n", t, n[t] }' "$WORK/strace" | sort -k2 -rn
        fi
        echo
    } | tee -a "$OUT/summary.md"
    stop_server
done
echo "results: $OUT"
