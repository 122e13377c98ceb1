#!/usr/bin/env bash
# Calibration: scenario 1 of bench/core.sh (1,000 subscribers on one topic, 100 events/s)
# against Nchan (Debian's nginx + libnginx-mod-nchan), with the same generator, pinning and
# restart rules, so a Tidings figure can be read against Nchan measured the same way.
# Installs the two Debian packages when nginx is missing. Issue 7 extends this to every scenario.
#
#   bench/nchan.sh            # $RUNS runs (default 2)
#
# Environment: PORT (18972), RUNS (2), SERVER_CPU (0), GEN_CPU (1), EVENTS (1000),
# OUT (bench/results/nchan-DATE), WAIT_QUIET (1), SKIP_BUILD (0).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18972}
RUNS=${RUNS:-2}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
EVENTS=${EVENTS:-1000}
WAIT_QUIET=${WAIT_QUIET:-1}
OUT=${OUT:-bench/results/nchan-$(date +%Y%m%d-%H%M%S)}

ulimit -n "$(ulimit -Hn)"
if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-nchan
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release -p tidings-bench
fi
BIN=$PWD/target/release
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/tidings-bench-nchan.XXXXXX)
BASE=http://127.0.0.1:$PORT
NGINX_PID=

if ss -ltn "sport = :$PORT" | grep -q LISTEN; then
    echo "port $PORT is already in use: set PORT" >&2
    exit 1
fi

# One worker (the server gets one core), no access log, messages kept in memory (Nchan's default).
cat >"$WORK/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/error.log warn;
events { worker_connections 30000; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location = /pub { nchan_publisher; nchan_channel_id \$arg_id; }
        location = /sub { nchan_subscriber eventsource; nchan_channel_id \$arg_id; }
    }
}
EOF

stop_nginx() {
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID"
        for _ in $(seq 100); do
            kill -0 "$NGINX_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
        wait "$NGINX_PID" 2>/dev/null || true
    fi
    NGINX_PID=
}
trap 'stop_nginx; rm -rf "$WORK"' EXIT

start_nginx() {
    stop_nginx
    taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx.conf" -e "$WORK/error.log" >>"$OUT/nginx.log" 2>&1 &
    NGINX_PID=$!
    for _ in $(seq 100); do
        if curl -s -o /dev/null "$BASE/pub?id=probe"; then
            return 0
        fi
        sleep 0.1
    done
    echo "nginx did not start; see $WORK/error.log" >&2
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

for run in $(seq "$RUNS"); do
    wait_quiet "nchan fanout-1000 run $run"
    start_nginx
    # The master and its worker are summed (--server-pid takes descendants too).
    taskset -c "$GEN_CPU" "$BIN/tidings-bench" fanout -n 1000 -m "$EVENTS" --rate 100 \
        --subscribe-url "$BASE/sub?id=bench{topic}" \
        --publish-url "$BASE/pub?id=bench{topic}" --publish-body '{data}' --body-encoding raw \
        --content-type text/plain --server-pid "$NGINX_PID" \
        --label "nchan fanout-1000 #$run" --out "$OUT/nchan-fanout-1000-run$run.json"
    stop_nginx
done

"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
echo "results in $OUT"
