#!/usr/bin/env bash
# Benchmark: builds release, starts telexd (fsync always) on a free port with a temporary data directory,
# runs telex-bench against it, stops the server and prints the table. Extra arguments go to telex-bench,
# e.g. Scripts/bench.sh --codec none --runs 1 --events 50000
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release --product telexd >&2
swift build -c release --product telex-bench >&2
bin=$(swift build -c release --show-bin-path)
data=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

"$bin/telexd" --port "$port" --data-dir "$data" --fsync "${TELEX_BENCH_FSYNC:-always}" --log-level warning 2>"$log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$log"' EXIT
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

"$bin/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" \
    --server-fsync "${TELEX_BENCH_FSYNC:-always}" "$@"
