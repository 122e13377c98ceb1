#!/usr/bin/env bash
# Issue 11, part 3: what pattern selectors cost the hub per event.
#
#   bench/selectors.sh                    # every scenario, once
#   bench/selectors.sh template heavy     # some: template | heavy
#
# template: N subscribers (10, then 10,000) all hold the URI template `jobs/{id}` plus their own
#   exact topic bench/(i % 1000); events go to bench/0 only, so each event reaches N/1000 (at
#   least 1) subscribers and the rest of the hub's work per event is evaluating `jobs/{id}`:
#   once per subscriber before issue 11, once per event after. Reported: hub CPU per event.
# heavy: 400 anonymous subscriptions, each with 15 distinct ~2 KB URI templates (6,000 in all),
#   then events to a topic none of them matches: hub CPU per publish, or the refusal.
#
# Environment: PORT (18973), EVENTS (300), RATE (50), HEAVY_SUBS (400), OUT
# (bench/results/selectors-DATE), TIDINGS_BIN_DIR (where `tidings` is, to measure another build,
# e.g. main's; the generator stays ours), and those of bench/lib.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18973}
EVENTS=${EVENTS:-300}
RATE=${RATE:-50}
HEAVY_SUBS=${HEAVY_SUBS:-400}
OUT=${OUT:-bench/results/selectors-$(date +%Y%m%d-%H%M%S)}
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(template heavy)
mkdir -p "$OUT"

source bench/lib.sh
raise_fd_limit
check_port "$PORT"
build_binaries
GEN_BIN=$BIN
if [ -n "${TIDINGS_BIN_DIR:-}" ]; then
    BIN=$TIDINGS_BIN_DIR
    mkdir -p "$WORK/bin"
    ln -sf "$GEN_BIN/tidings-bench" "$WORK/bin/tidings-bench"
    ln -sf "$TIDINGS_BIN_DIR/tidings" "$WORK/bin/tidings"
    BIN=$WORK/bin
fi
machine_info "$OUT/machine.txt"
BASE=http://127.0.0.1:$PORT
PUB="$BASE/.well-known/mercure"

# A ~2 KB URI template, distinct for each subscriber ({i}, which the generator fills in) and k:
# a literal and ~350 one-variable expressions, percent-encoded for a query string.
heavy_template() {
    local s="h{i}x$1" v=0 len=6
    while [ "$len" -lt 2000 ]; do
        s+="%7Bv$v%7D"
        len=$((len + ${#v} + 3))
        v=$((v + 1))
    done
    printf '%s' "$s"
}

for scenario in "${SCENARIOS[@]}"; do
    case $scenario in
    template)
        for n in 10 10000; do
            wait_quiet "template-$n"
            start_tidings "$PORT"
            # 250 source addresses: 40 subscriptions (40 patterns) per address at most.
            gen fanout -n "$n" --topics 1000 --topic-mode active --active 1 --source-addrs 250 \
                -m "$EVENTS" --rate "$RATE" \
                --subscribe-url "$BASE/.well-known/mercure?topic=bench/{topic}&topic=jobs%2F%7Bid%7D" \
                --publish-url "$PUB" --label "template jobs/{id}, $n subscribers" \
                --out "$OUT/template-$n.json"
            stop_server
        done
        ;;
    heavy)
        wait_quiet "heavy"
        start_tidings "$PORT"
        query=""
        for k in $(seq 15); do
            query+="topic=$(heavy_template "$k")&"
        done
        url="$BASE/.well-known/mercure?${query}topic=bench/{topic}"
        # One request first: refused (and why), or accepted.
        one=${url//\{i\}/0}
        one=${one//\{topic\}/0}
        status=$(curl -s -o "$OUT/heavy-first.txt" -w '%{http_code}' --max-time 3 "$one" || true)
        echo "heavy: the first subscription was answered $status: $(head -c 300 "$OUT/heavy-first.txt")" |
            tee "$OUT/heavy-first-status.txt"
        if [ "$status" = 200 ]; then
            gen fanout -n "$HEAVY_SUBS" --topics "$HEAVY_SUBS" --topic-mode active --active 1 \
                --source-addrs 1 -m "$EVENTS" --rate "$RATE" --connect-timeout 600 \
                --subscribe-url "$url" --publish-url "$PUB" \
                --label "heavy: $HEAVY_SUBS subscriptions x 15 distinct 2 KB templates" \
                --out "$OUT/heavy.json"
        fi
        stop_server
        ;;
    *)
        echo "unknown scenario $scenario (template | heavy)" >&2
        exit 2
        ;;
    esac
done

if ls "$OUT"/*.json >/dev/null 2>&1; then
    "$GEN_BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
fi
echo "results in $OUT"
