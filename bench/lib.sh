# Shared by bench/core.sh, bench/nchan.sh and bench/compare.sh (source it from the repository
# root, with OUT set). It knows how to install, start, watch and stop each server, pinned to
# $SERVER_CPU, and runs the generator pinned to $GEN_CPU.
#
# Environment: SERVER_CPU (0), GEN_CPU (1), WAIT_QUIET (1: before each run wait for the 1-minute
# load average to fall below QUIET_LOAD (0.7), at most QUIET_MAX seconds (120), and log it),
# NOFILE (250000: the fd limit, raised as root), SKIP_BUILD (1: use target/release as is),
# STORE (Tidings' store: empty for a fresh SQLite file per run, or a postgres:// or redis:// URL),
# TIDINGS_BIN (the `tidings` server to measure, e.g. an older build; default target/release's),
# TIDINGS_BASE_BIN (the server kind tidings-base: an older build measured beside this one; the
# kind tidings-normal is this build with --durability normal, no fsync per commit),
# NCHAN_CONNECTIONS (nginx's worker_connections: the fd limit + 10,000, as Nchan takes slots of
# its own beside the subscribers' and the fd limit caps the rest).

SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
WAIT_QUIET=${WAIT_QUIET:-1}
QUIET_LOAD=${QUIET_LOAD:-0.7}
QUIET_MAX=${QUIET_MAX:-120}
NOFILE=${NOFILE:-250000}
STORE=${STORE:-}
BIN=$PWD/target/release
VENV=$PWD/bench/.venv
SERVER_PID=
SERVER_KIND=
SERVER_SIGNAL=TERM
WORK=$(mktemp -d /tmp/tidings-bench.XXXXXX)

# Every subscriber takes a descriptor on each side. Root with CAP_SYS_RESOURCE may raise the
# hard limit (up to fs.nr_open); otherwise the soft limit goes up to the hard one, and that caps
# the subscribers one server process (and one generator) can hold.
raise_fd_limit() {
    ulimit -Hn "$NOFILE" 2>/dev/null ||
        echo "note: the hard fd limit stays at $(ulimit -Hn) (raising it needs CAP_SYS_RESOURCE)" >&2
    ulimit -n "$(ulimit -Hn)"
}

build_binaries() {
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
        cargo build --release -p tidings -p tidings-bench
    fi
}

check_port() {
    if ss -ltn "sport = :$1" | grep -q LISTEN; then
        echo "port $1 is already in use: set PORT" >&2
        exit 1
    fi
}

# machine_info FILE: what the results were measured on.
machine_info() {
    {
        echo "date: $(date -Is)"
        echo "nproc: $(nproc)"
        echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        echo "memory: $(free -g | awk '/^Mem:/ { print $2 " GiB" }')"
        echo "kernel: $(uname -r)"
        echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$( [ -z "$(git status --porcelain 2>/dev/null)" ] || echo ' (with uncommitted changes)')"
        echo "fd limit: $(ulimit -n) (hard $(ulimit -Hn), per process)"
        echo "ip_local_port_range: $(sysctl -n net.ipv4.ip_local_port_range | tr '\t' ' ')"
        echo "somaxconn: $(sysctl -n net.core.somaxconn), tcp_max_syn_backlog: $(sysctl -n net.ipv4.tcp_max_syn_backlog)"
        echo "server cpu: $SERVER_CPU, generator cpu: $GEN_CPU"
        if [ -n "$STORE" ]; then echo "store: $STORE"; fi
    } >"$1"
    cat "$1"
}

# wait_quiet LABEL: waits (at most QUIET_MAX s) for a quiet machine, then logs the load average
# to $OUT/load.txt, marked "busy" when it never fell below QUIET_LOAD.
wait_quiet() {
    local load waited=0 mark=""
    load=$(cut -d' ' -f1 /proc/loadavg)
    if [ "$WAIT_QUIET" = 1 ]; then
        while ! awk -v l="$load" -v q="$QUIET_LOAD" 'BEGIN { exit !(l < q) }'; do
            if [ "$waited" -ge "$QUIET_MAX" ]; then
                mark=" (busy: still above $QUIET_LOAD after ${QUIET_MAX}s)"
                break
            fi
            echo "load average $load: waiting for a quiet machine ($waited s)" >&2
            sleep 5
            waited=$((waited + 5))
            load=$(cut -d' ' -f1 /proc/loadavg)
        done
    fi
    echo "$1: load average $(cat /proc/loadavg), waited ${waited}s$mark" | tee -a "$OUT/load.txt"
}

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -"$SERVER_SIGNAL" "$SERVER_PID"
        for _ in $(seq 150); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
    SERVER_KIND=
}

lib_cleanup() {
    stop_server
    rm -rf "$WORK"
}
trap lib_cleanup EXIT

# wait_up URL NAME: until the URL answers (any status), for at most 20 s.
wait_up() {
    for _ in $(seq 200); do
        if curl -sk -o /dev/null "$1"; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "$2 did not start; see $OUT/$2.log" >&2
    exit 1
}

# Fresh storage for Tidings: an empty SQLite file; a Postgres database whose name starts with
# tidings_bench is dropped and created again, Redis keys of a prefix= starting with tidings_bench
# are deleted (never anyone else's: other names are used as they are).
fresh_store() {
    case $STORE in
    "")
        rm -f "$WORK"/tidings.db*
        STORE_ARG=$WORK/tidings.db
        ;;
    postgres://* | postgresql://*)
        local db=${STORE##*/}
        db=${db%%\?*}
        if [[ $db == tidings_bench* ]]; then
            psql -q "${STORE%/*}/postgres" -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" \
                -c "CREATE DATABASE \"$db\"" >/dev/null
        fi
        STORE_ARG=$STORE
        ;;
    redis://* | rediss://*)
        # The hub's keys start with the URL's prefix= (default "tidings"): those of a prefix
        # starting with tidings_bench are deleted; another prefix is used as is.
        local prefix
        prefix=$(sed -n 's/.*[?&]prefix=\([^&]*\).*/\1/p' <<<"$STORE")
        if [[ $prefix == tidings_bench* ]]; then
            redis-cli -u "${STORE%%\?*}" --scan --pattern "$prefix*" |
                xargs -r -n 500 redis-cli -u "${STORE%%\?*}" UNLINK >/dev/null
        fi
        STORE_ARG=$STORE
        ;;
    *)
        STORE_ARG=$STORE
        ;;
    esac
}

# start_tidings PORT [serve flags...]: probed over https when the flags give --tls-cert.
start_tidings() {
    local port=$1 scheme=http
    shift
    case " $* " in *" --tls-cert "*) scheme=https ;; esac
    stop_server
    fresh_store
    taskset -c "$SERVER_CPU" "${TIDINGS_BIN:-$BIN/tidings}" serve --listen "127.0.0.1:$port" \
        --store "$STORE_ARG" "$@" >>"$OUT/tidings.log" 2>&1 &
    SERVER_PID=$!
    SERVER_KIND=tidings
    SERVER_SIGNAL=TERM
    wait_up "$scheme://127.0.0.1:$port/healthz" tidings
}

install_nchan() {
    if ! command -v nginx >/dev/null || [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light libnginx-mod-nchan
    fi
}

# start_nchan PORT [CERT_DIR]: one worker (the server gets one core), no access log, messages in
# memory (Nchan's default), 1,000 messages kept per channel for Last-Event-ID resumption (the
# default is 10, which a reconnect storm at 100 events/s outruns). With CERT_DIR (cert.pem and
# key.pem) it listens with TLS and HTTP/2 (nginx 1.22's `listen ... ssl http2`), 1,024 streams
# per connection.
start_nchan() {
    local port=$1 certs=${2:-} dir=$WORK/nginx-$1 listen=127.0.0.1:$1 scheme=http tls=""
    if [ -n "$certs" ]; then
        listen="$listen ssl http2"
        scheme=https
        tls="http2_max_concurrent_streams 1024;
    ssl_certificate $certs/cert.pem;
    ssl_certificate_key $certs/key.pem;"
    fi
    stop_server
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections ${NCHAN_CONNECTIONS:-$(($(ulimit -n) + 10000))}; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    $tls
    server {
        listen $listen backlog=4096;
        location = /pub { nchan_publisher; nchan_channel_id \$arg_id; nchan_message_buffer_length 1000; }
        location = /sub { nchan_subscriber eventsource; nchan_channel_id \$arg_id; nchan_message_buffer_length 1000; }
    }
}
EOF
    taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -e "$dir/error.log" >>"$OUT/nchan.log" 2>&1 &
    SERVER_PID=$!
    SERVER_KIND=nchan
    SERVER_SIGNAL=QUIT
    wait_up "$scheme://127.0.0.1:$port/pub?id=probe" nchan
}

# The venv of the FastAPI peer and the plots, from PyPI (bench/peers/fastapi/requirements.txt).
setup_venv() {
    local req=$PWD/bench/peers/fastapi/requirements.txt
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    if ! cmp -s "$req" "$VENV/.installed" 2>/dev/null; then
        "$VENV/bin/pip" install -q -r "$req"
        cp "$req" "$VENV/.installed"
    fi
}

# start_fastapi PORT: one uvicorn process (uvloop + httptools), no access log.
start_fastapi() {
    local port=$1
    stop_server
    taskset -c "$SERVER_CPU" "$VENV/bin/uvicorn" app:app --app-dir "$PWD/bench/peers/fastapi" \
        --host 127.0.0.1 --port "$port" --no-access-log --log-level warning --backlog 4096 \
        >>"$OUT/fastapi.log" 2>&1 &
    SERVER_PID=$!
    SERVER_KIND=fastapi
    SERVER_SIGNAL=TERM
    wait_up "http://127.0.0.1:$port/healthz" fastapi
}

# start_server KIND PORT: tidings | nchan | fastapi.
start_server() {
    case $1 in
    tidings) start_tidings "$2" ;;
    tidings-base)
        if [ -z "${TIDINGS_BASE_BIN:-}" ]; then
            echo "tidings-base needs TIDINGS_BASE_BIN" >&2
            exit 2
        fi
        TIDINGS_BIN=$TIDINGS_BASE_BIN start_tidings "$2"
        ;;
    # The price of durability: no fsync per commit (SQLite's synchronous=NORMAL in WAL mode).
    tidings-normal) start_tidings "$2" --durability normal ;;
    nchan) start_nchan "$2" ;;
    fastapi) start_fastapi "$2" ;;
    *)
        echo "unknown server $1" >&2
        exit 2
        ;;
    esac
}

# endpoints KIND PORT: sets SUB_URL and the PUB_ARGS array (the generator's publish options)
# for a server; {topic} is the generator's topic index.
endpoints() {
    local base=http://127.0.0.1:$2
    case $1 in
    tidings | tidings-base | tidings-normal)
        SUB_URL="$base/.well-known/mercure?topic=bench/{topic}"
        PUB_ARGS=(--publish-url "$base/.well-known/mercure")
        ;;
    nchan)
        SUB_URL="$base/sub?id=bench{topic}"
        PUB_ARGS=(--publish-url "$base/pub?id=bench{topic}" --publish-body '{data}'
            --body-encoding raw --content-type text/plain)
        ;;
    fastapi)
        SUB_URL="$base/api/v1/events/bench{topic}"
        PUB_ARGS=(--publish-url "$base/api/v1/events/bench{topic}"
            --publish-body '{"type":"progress","data":{data}}' --body-encoding raw
            --content-type application/json)
        ;;
    esac
}

# gen ARGS...: the generator on its core, watching the server's processes.
gen() {
    taskset -c "$GEN_CPU" "$BIN/tidings-bench" "$@" --server-pid "$SERVER_PID"
}
