#!/usr/bin/env bash
# Calibration of issue 2: scenario 1 of bench/core.sh (1,000 subscribers on one topic, 100
# events/s) against Nchan (Debian's nginx + libnginx-mod-nchan, installed when missing), with the
# same generator, pinning and restart rules. bench/compare.sh runs every peer and scenario.
#
#   bench/nchan.sh            # $RUNS runs (default 2)
#
# Environment: PORT (18972), RUNS (2), EVENTS (1000), OUT (bench/results/nchan-DATE), and those
# of bench/lib.sh (SERVER_CPU, GEN_CPU, WAIT_QUIET, SKIP_BUILD...).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18972}
RUNS=${RUNS:-2}
EVENTS=${EVENTS:-1000}
OUT=${OUT:-bench/results/nchan-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

source bench/lib.sh
raise_fd_limit
check_port "$PORT"
install_nchan
build_binaries
machine_info "$OUT/machine.txt"

for run in $(seq "$RUNS"); do
    wait_quiet "nchan fanout-1000 run $run"
    start_nchan "$PORT"
    endpoints nchan "$PORT"
    # The master and its worker are summed (--server-pid takes descendants too).
    gen fanout -n 1000 -m "$EVENTS" --rate 100 --subscribe-url "$SUB_URL" "${PUB_ARGS[@]}" \
        --label "nchan fanout-1000 #$run" --out "$OUT/nchan-fanout-1000-run$run.json"
    stop_server
done

"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
echo "results in $OUT"
