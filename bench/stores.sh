#!/usr/bin/env bash
# The stores side by side, in one run: acknowledged durable publishes per second with 64
# publishers (scenario 4) on SQLite, PostgreSQL and Redis, and publish -> deliver latency with 100
# subscribers at 100 events/s, on the publishing node and, for the cluster stores, on a second node
# (cross-node). Hubs are pinned to CPU 0 (both nodes of a pair share it), the generator to CPU 1;
# PostgreSQL and Redis run unpinned.
#
#   bench/stores.sh                 # everything; JSON and summary.md in bench/results/stores-DATE/
#   STORES="sqlite redis" bench/stores.sh
#
# PostgreSQL: the server at $PG_URL (default: 127.0.0.1:5432, database test, user postgres), in a
# schema of its own that is dropped after. Redis: a private redis-server on $REDIS_PORT started
# here with `appendonly yes` and `appendfsync always` (so an ack means on disk, as with SQLite's
# default), in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

STORES=${STORES:-"sqlite postgres redis"}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
REDIS_PORT=${REDIS_PORT:-16379}
PORT_A=${PORT_A:-18971}
PORT_B=${PORT_B:-18972}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
OUT=${OUT:-bench/results/stores-$(date -u +%Y%m%dT%H%M%S)}
BIN=target/release

mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" || true
if [[ -z ${SKIP_BUILD:-} ]]; then
  cargo build --release -p tidings -p tidings-bench
fi
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${redis_started:-} ]] && redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  [[ -n ${pg_schema:-} ]] && psql -q "$PG_URL" -c "DROP SCHEMA IF EXISTS $pg_schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# start PORT ARGS...: a hub on PORT, waits for its /healthz; its pid is then in $started (not
# printed: a command substitution would lose the pid list that stop_all needs).
start() {
  local port=$1; shift
  taskset -c "$SERVER_CPU" "$BIN/tidings" serve --listen "127.0.0.1:$port" "$@" \
    >"$OUT/hub-$port-$label.log" 2>&1 &
  started=$!
  pids+=("$started")
  for _ in $(seq 100); do
    kill -0 "$started" 2>/dev/null || break
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "the hub on port $port did not come up; see $OUT/hub-$port-$label.log" >&2
  exit 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}

gen() { taskset -c "$GEN_CPU" "$BIN/tidings-bench" "$@"; }

throughput() { # PID PORT
  gen throughput -c 64 -d 10 --warmup 2 --server-pid "$1" \
    --publish-url "http://127.0.0.1:$2/.well-known/mercure" \
    --json --out "$OUT/throughput-$label.json" --label "$label" >/dev/null
}

latency() { # NAME SUB_PID SUB_PORT PUB_PORT
  gen fanout -n 100 -m 1000 --rate 100 --server-pid "$2" \
    --subscribe-url "http://127.0.0.1:$3/.well-known/mercure?topic=bench/{topic}" \
    --publish-url "http://127.0.0.1:$4/.well-known/mercure" \
    --json --out "$OUT/latency-$label-$1.json" --label "$label, $1" >/dev/null
}

# pair STORE_ARGS...: two nodes on one log: same-node then cross-node latency, then throughput
# on node A.
pair() {
  local a b
  start "$PORT_A" "$@"; a=$started
  start "$PORT_B" "$@"; b=$started
  latency same-node "$a" "$PORT_A" "$PORT_A"
  latency cross-node "$b" "$PORT_B" "$PORT_A"
  throughput "$a" "$PORT_A"
  stop_all
}

uptime | tee "$OUT/load.txt"
for store in $STORES; do
  label=$store
  echo "== $store" >&2
  case $store in
    sqlite)
      start "$PORT_A" --store "$work/sqlite.db"; a=$started
      latency same-node "$a" "$PORT_A" "$PORT_A"
      throughput "$a" "$PORT_A"
      stop_all
      ;;
    postgres)
      pg_schema=bench_stores_$$
      pair --store "$PG_URL" --pg-schema "$pg_schema"
      ;;
    redis)
      mkdir -p "$work/redis"
      redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work/redis" \
        --appendonly yes --appendfsync always --save "" --logfile "$work/redis/log" >/dev/null
      redis_started=1
      for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
      pair --store "redis://127.0.0.1:$REDIS_PORT/0?prefix=bench"
      ;;
    *) echo "unknown store $store" >&2; exit 2 ;;
  esac
  uptime | tee -a "$OUT/load.txt"
done
"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
