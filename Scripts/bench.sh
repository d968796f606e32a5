#!/usr/bin/env bash
# Benchmark: builds release, starts telexd (fsync always) on a free port with a temporary data directory,
# runs telex-bench against it, stops the server and prints the table. Extra arguments go to telex-bench,
# e.g. Scripts/bench.sh --codec none --runs 1 --events 50000
# TELEX_BENCH_TLS=1 runs the broker with TLS (a throwaway CA and certificate made with openssl) and the client
# with --tls-ca, e.g. TELEX_BENCH_TLS=1 Scripts/bench.sh --publish-and-replay-only. TELEX_BENCH_SCRATCH names
# another build folder than .build.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=(--scratch-path "${TELEX_BENCH_SCRATCH:-.build}")
swift build -c release "${scratch[@]}" --product telexd >&2
swift build -c release "${scratch[@]}" --product telex-bench >&2
bin=$(swift build -c release "${scratch[@]}" --show-bin-path)
data=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

tls_server=()
tls_client=()
if [ "${TELEX_BENCH_TLS:-0}" = 1 ]; then
    certs="$data/certificates"
    mkdir -p "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=bench CA" \
        -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$certs/server.ext"
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial -days 1 \
        -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null
    tls_server=(--tls-cert "$certs/server.pem" --tls-key "$certs/server.key")
    tls_client=(--tls-ca "$certs/ca.pem")
fi

"$bin/telexd" --port "$port" --data-dir "$data" --fsync "${TELEX_BENCH_FSYNC:-always}" --log-level warning \
    "${tls_server[@]}" 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$log"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

"$bin/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" \
    --server-fsync "${TELEX_BENCH_FSYNC:-always}" "${tls_client[@]}" "$@"
