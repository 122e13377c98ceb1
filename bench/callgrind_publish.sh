#!/usr/bin/env bash
# Instructions per publish and per delivery, counted by callgrind (repeatable on a noisy
# machine): the hub runs under valgrind on a fresh SQLite file; $SUBS subscribers of one topic
# and a paced publisher (tidings-bench, one connection) warm it up with $EVENTS events, the
# counters are zeroed, $EVENTS more events are published and delivered, and the counters are
# dumped. The report divides the totals of the whole process, of the SQLite writer thread and
# of the connection tasks by $EVENTS. One delivery's instructions are the difference a
# subscriber makes: (whole hub with SUBS=101 - whole hub with SUBS=1) / 100, per publish.
#
#   bench/callgrind_publish.sh [TIDINGS_BINARY]     # default target/release/tidings
#   SUBS=101 bench/callgrind_publish.sh             # with the run above: one delivery
#   PUBLISHERS=64 bench/callgrind_publish.sh        # group commits: 64 publishers, 100 topics,
#                                                   # as fast as acknowledgments come, 5 s
#
# Environment: PORT (18992), EVENTS (400), SUBS (1), PUBLISHERS (0: the paced run above),
# OUT (bench/results/callgrind-DATE).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/tidings}
GEN=target/release/tidings-bench
PORT=${PORT:-18992}
EVENTS=${EVENTS:-400}
SUBS=${SUBS:-1}
PUBLISHERS=${PUBLISHERS:-0}
OUT=${OUT:-bench/results/callgrind-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tidings-callgrind.XXXXXX)
valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.%p" \
    "$BIN" serve --listen "127.0.0.1:$PORT" --store "$WORK/t.db" >"$OUT/hub.log" 2>&1 &
VG=$!
trap 'kill $VG 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.5; done
run() {
    if [ "$PUBLISHERS" -gt 0 ]; then
        # The publishes acknowledged (the report's "acked N (R/s)") become $EVENTS.
        EVENTS=$("$GEN" throughput -c "$PUBLISHERS" -d "$1" --warmup 0 --topics 100 \
            --topic-mode random --publish-url "http://127.0.0.1:$PORT/.well-known/mercure" |
            awk '/^acked/ { print $2 }')
        echo "acked $EVENTS"
    else
        "$GEN" fanout -n "$SUBS" -m "$EVENTS" --rate 50 --publish-connections 1 \
            --subscribe-url "http://127.0.0.1:$PORT/.well-known/mercure?topic=bench/{topic}" \
            --publish-url "http://127.0.0.1:$PORT/.well-known/mercure" | grep -E "lost"
    fi
}
run 3
callgrind_control -z "$VG" >/dev/null
run 5
callgrind_control -d "$VG" >/dev/null
sleep 2
DUMP=$(ls "$OUT"/callgrind.*.1)
ann=$(callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null)
# per PATTERN WHAT: the inclusive count of the first line matching PATTERN, per publish.
per() {
    { grep -m1 -- "$1" <<<"$ann" || true; } |
        awk -v n="$EVENTS" -v what="$2" '{ gsub(",", "", $1); printf "%-40s %10.0f instructions per publish\n", what, $1 / n }'
}
{
    subs=$([ "$PUBLISHERS" -gt 0 ] && echo 0 || echo "$SUBS")
    echo "binary: $BIN ($EVENTS publishes, $subs subscriber(s), $PUBLISHERS concurrent publishers)"
    per 'PROGRAM TOTALS' "whole hub"
    per 'sqlite.rs:std::sys::backtrace::__rust_begin_short_backtrace' "SQLite writer thread"
    per 'net/mod.rs:tidings::net::Admission::admit::{{closure}} \[' "connection tasks (HTTP, handlers)"
    per 'hub.rs:tidings_core::hub::pump::{{closure}} \[' "pump (dispatch, delivery)"
} | tee "$OUT/summary.txt"
