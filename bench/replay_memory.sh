#!/usr/bin/env bash
# Issue 11's replay scenarios: TOPICS (300) topics whose newest event is ~1 MB, then
#   latest:   LATEST (4) clients ask `topic=*&latest=1` and never read a byte;
#   earliest: REPLAYS (50) clients ask `topic=big/{i}&lastEventID=earliest` and never read.
# Prints the hub's RSS before the clients and its peak RSS over WATCH (8) seconds after they
# connect, for each scenario (a fresh hub each).
#
#   bench/replay_memory.sh BINARY [extra tidings serve flags...]
#
# Environment: PORT (18421), TOPICS (300), LATEST (4), REPLAYS (50), EVENT_BYTES (1000000),
# WATCH (8).
set -euo pipefail
BIN=${1:?usage: bench/replay_memory.sh BINARY [flags...]}
shift
PORT=${PORT:-18421}
TOPICS=${TOPICS:-300}
LATEST=${LATEST:-4}
REPLAYS=${REPLAYS:-50}
EVENT_BYTES=${EVENT_BYTES:-1000000}
WATCH=${WATCH:-8}
WORK=$(mktemp -d /tmp/tidings-replay.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
rss_mib() { awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }

python3 -c "import json,sys; print(json.dumps({'topic':'big/TOPIC','data':'x'*int(sys.argv[1])}))" \
    "$EVENT_BYTES" >"$WORK/event.json"

run() { # run NAME PATH CLIENTS
    rm -f "$WORK/t.db"*
    "$BIN" serve --listen "127.0.0.1:$PORT" --store "$WORK/t.db" "${FLAGS[@]}" >"$WORK/hub.log" 2>&1 &
    local hub=$!
    PIDS+=("$hub")
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
        sleep 0.1
    done
    for i in $(seq 0 $((TOPICS - 1))); do
        sed "s|big/TOPIC|big/$i|" "$WORK/event.json" |
            curl -sf -o /dev/null -H 'content-type: application/json' --data-binary @- \
                "http://127.0.0.1:$PORT/.well-known/mercure"
    done
    local before peak now
    before=$(rss_mib "$hub")
    python3 - "$PORT" "$3" "$2" >"$WORK/clients.log" 2>&1 <<'EOF' &
import socket, sys, time
port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: h\r\n\r\n" % path).encode())
    socks.append(s)
time.sleep(3600)
EOF
    local clients=$!
    PIDS+=("$clients")
    peak=$before
    for _ in $(seq $((WATCH * 10))); do
        now=$(rss_mib "$hub")
        [ "$now" -gt "$peak" ] && peak=$now
        sleep 0.1
    done
    printf '%-9s %3d clients: hub RSS %4d MiB before, peak %5d MiB after (+%d)\n' \
        "$1" "$3" "$before" "$peak" $((peak - before))
    kill "$clients" "$hub" 2>/dev/null || true
    wait "$clients" "$hub" 2>/dev/null || true
}

FLAGS=("$@")
run latest '/.well-known/mercure?topic=*&latest=1' "$LATEST"
run earliest '/.well-known/mercure?topic=big/{i}&lastEventID=earliest' "$REPLAYS"
