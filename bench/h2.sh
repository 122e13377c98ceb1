#!/usr/bin/env bash
# Issue 15: 1,000 subscribers on one topic, 100 events/s (scenario 1 of bench/core.sh), the same
# hub build in one run over: HTTP/1.1 cleartext (the raw-socket live path), HTTP/2 cleartext with
# prior knowledge (h2c), HTTP/2 over TLS (ALPN h2) and HTTP/1.1 over TLS (hyper's body path).
# HTTP/2 runs carry the 1,000 streams on $H2_CONNECTIONS connections. The configurations
# alternate within each round, so a noisy machine weighs on all of them alike; compare ratios.
# The peer: Nchan behind nginx's HTTP/2 over TLS (nchan-h2; Debian's nginx + libnginx-mod-nchan,
# installed when missing), the same 1,000 streams on the same connections.
# The TLS certificate (a CA and a leaf for 127.0.0.1) is made with openssl in a temporary dir.
#
#   bench/h2.sh                    # $RUNS rounds (default 2) of every configuration
#   RUNS=1 bench/h2.sh h1 h2c      # some: h1 | h2c | h2tls | h1tls | nchan-h2
#
# Environment: PORT (18973), RUNS (2), EVENTS (1000), H2_CONNECTIONS (4), OUT
# (bench/results/h2-DATE), and those of bench/lib.sh (SERVER_CPU, GEN_CPU, WAIT_QUIET,
# SKIP_BUILD...). Results: one JSON report per configuration and run, and $OUT/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${PORT:-18973}
RUNS=${RUNS:-2}
EVENTS=${EVENTS:-1000}
H2_CONNECTIONS=${H2_CONNECTIONS:-4}
OUT=${OUT:-bench/results/h2-$(date +%Y%m%d-%H%M%S)}
CONFIGS=("$@")
[ ${#CONFIGS[@]} -gt 0 ] || CONFIGS=(h1 h2c h2tls h1tls nchan-h2)
mkdir -p "$OUT"

source bench/lib.sh
raise_fd_limit
check_port "$PORT"
build_binaries
machine_info "$OUT/machine.txt"

# A CA and a certificate for 127.0.0.1 signed by it.
CERTS=$WORK/certs
mkdir -p "$CERTS"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=tidings bench CA" -keyout "$CERTS/ca.key" -out "$CERTS/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$CERTS/key.pem" -out "$CERTS/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$CERTS/ext.cnf"
openssl x509 -req -in "$CERTS/leaf.csr" -CA "$CERTS/ca.pem" -CAkey "$CERTS/ca.key" \
    -CAcreateserial -days 2 -extfile "$CERTS/ext.cnf" -out "$CERTS/cert.pem" 2>/dev/null

# start_hub PORT TLS(0|1): the hub, with up to 1,024 streams per HTTP/2 connection.
start_hub() {
    local flags=(--max-concurrent-streams 1024)
    if [ "$2" = 1 ]; then
        flags+=(--tls-cert "$CERTS/cert.pem" --tls-key "$CERTS/key.pem")
    fi
    start_tidings "$1" "${flags[@]}"
}

case " ${CONFIGS[*]} " in *" nchan-h2 "*) install_nchan ;; esac

for run in $(seq "$RUNS"); do
    for config in "${CONFIGS[@]}"; do
        case $config in
        h1) tls=0 extra=() label="HTTP/1.1" ;;
        h2c) tls=0 extra=(--http2-connections "$H2_CONNECTIONS") label="HTTP/2 h2c, $H2_CONNECTIONS conns" ;;
        h2tls) tls=1 extra=(--http2-connections "$H2_CONNECTIONS") label="HTTP/2 TLS, $H2_CONNECTIONS conns" ;;
        h1tls) tls=1 extra=() label="HTTP/1.1 TLS" ;;
        nchan-h2) tls=1 extra=(--http2-connections "$H2_CONNECTIONS") label="Nchan, nginx HTTP/2 TLS, $H2_CONNECTIONS conns" ;;
        *)
            echo "unknown configuration $config (h1 | h2c | h2tls | h1tls)" >&2
            exit 2
            ;;
        esac
        scheme=$([ "$tls" = 1 ] && echo https || echo http)
        base=$scheme://127.0.0.1:$PORT
        wait_quiet "$config run $run"
        if [ "$config" = nchan-h2 ]; then
            start_nchan "$PORT" "$CERTS"
            sub="$base/sub?id=bench{topic}"
            pub=(--publish-url "$base/pub?id=bench{topic}" --publish-body '{data}'
                --body-encoding raw --content-type text/plain)
        else
            start_hub "$PORT" "$tls"
            sub="$base/.well-known/mercure?topic=bench/{topic}"
            pub=(--publish-url "$base/.well-known/mercure")
        fi
        gen fanout -n 1000 -m "$EVENTS" --rate 100 --subscribe-url "$sub" "${pub[@]}" \
            --tls-ca "$CERTS/ca.pem" "${extra[@]}" \
            --label "fanout-1000 $label #$run" --out "$OUT/fanout-1000-$config-run$run.json"
        stop_server
    done
done

"$BIN/tidings-bench" summary "$OUT"/*.json | tee "$OUT/summary.md"
echo "results in $OUT"
