#!/usr/bin/env bash
# Issue 11's memory scenario: SUBSCRIBERS (700) clients subscribe to one topic and never read,
# one client reads it (curl), and EVENTS (40) events of ~1 MB are published. Prints the hub's
# peak RSS, the peak and final kernel TCP memory (/proc/net/sockstat `TCP: ... mem`, in 4 KiB
# pages, both ends of every local connection), how many non-readers the hub still holds, and
# how many events the reader got.
#
#   bench/memory.sh BINARY [extra tidings serve flags...]
#
# e.g. bench/memory.sh target/debug/tidings
#      bench/memory.sh /tmp/tidings-main --queue-bytes 8388608
# Environment: PORT (18411), SUBSCRIBERS (700), EVENTS (40), EVENT_BYTES (1000000).
set -euo pipefail
BIN=${1:?usage: bench/memory.sh BINARY [flags...]}
shift
PORT=${PORT:-18411}
SUBSCRIBERS=${SUBSCRIBERS:-700}
EVENTS=${EVENTS:-40}
EVENT_BYTES=${EVENT_BYTES:-1000000}
WORK=$(mktemp -d /tmp/tidings-memory.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

tcp_pages() { awk '/^TCP:/ { for (i = 1; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
established() { ss -tnH state established "sport = :$PORT" | wc -l; }
# skmem_sum FILTER FIELD: the sum, in MiB, of one skmem field (w: bytes queued to send, r: bytes
# received and unread) over the sockets ss matches, whatever their state.
skmem_sum() {
    ss -tnmH "$1" | grep -o "skmem:([^)]*)" | tr ',(' '\n\n' |
        awk -v f="$2" '$0 ~ "^" f "[0-9]" { sub("^" f, ""); s += $0 } END { printf "%d", s / 1048576 }'
}

"$BIN" serve --listen "127.0.0.1:$PORT" --store "$WORK/t.db" "$@" >"$WORK/hub.log" 2>&1 &
HUB=$!
PIDS+=("$HUB")
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null && break
    sleep 0.1
done
BASE_PAGES=$(tcp_pages)

# The non-readers: each sends its request and never reads a byte.
python3 - "$PORT" "$SUBSCRIBERS" >"$WORK/clients.log" 2>&1 <<'EOF' &
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /.well-known/mercure?topic=big HTTP/1.1\r\nHost: h\r\n\r\n")
    socks.append(s)
print("connected", len(socks), flush=True)
time.sleep(3600)
EOF
PIDS+=($!)
curl -sN "http://127.0.0.1:$PORT/.well-known/mercure?topic=big" >"$WORK/reader.txt" &
PIDS+=($!)
until grep -q connected "$WORK/clients.log" 2>/dev/null; do sleep 0.2; done
sleep 1

head -c "$EVENT_BYTES" /dev/zero | tr '\0' x >"$WORK/data"
PEAK_PAGES=0
PEAK_RSS=0
PEAK_SENDQ=0
sample() {
    local p r q
    p=$(tcp_pages)
    r=$(rss_kib "$HUB")
    ((p > PEAK_PAGES)) && PEAK_PAGES=$p
    ((r > PEAK_RSS)) && PEAK_RSS=$r
    q=$(skmem_sum "sport = :$PORT" w)
    ((q > PEAK_SENDQ)) && PEAK_SENDQ=$q
    return 0
}
for i in $(seq "$EVENTS"); do
    curl -sf -o /dev/null "http://127.0.0.1:$PORT/.well-known/mercure" \
        --data-urlencode "topic=big" --data-urlencode "data@$WORK/data"
    sample
done
for _ in $(seq 20); do
    sample
    sleep 0.25
done
echo "binary: $BIN $*"
echo "subscribers: $SUBSCRIBERS non-reading + 1 reader; events: $EVENTS x $EVENT_BYTES bytes"
echo "hub peak RSS: $((PEAK_RSS / 1024)) MiB"
echo "kernel TCP memory: before $((BASE_PAGES * 4 / 1024)) MiB, peak $((PEAK_PAGES * 4 / 1024)) MiB, 5 s after the last publish $(($(tcp_pages) * 4 / 1024)) MiB"
echo "hub-side send queues (skmem w): peak $PEAK_SENDQ MiB, 5 s after $(skmem_sum "sport = :$PORT" w) MiB; client-side unread (skmem r) 5 s after: $(skmem_sum "dport = :$PORT" r) MiB"
echo "connections the hub still holds 5 s after: $(established); subscribers cut as slow: $(curl -sf "http://127.0.0.1:$PORT/stats" | python3 -c 'import json, sys; print(json.load(sys.stdin)["slow_disconnects"])')"
echo "events the reader got: $(grep -c '^id:' "$WORK/reader.txt" || true) of $EVENTS"
