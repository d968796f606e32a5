#!/usr/bin/env bash
# Soak test: builds release telexd and telex-crash, runs telexd (fsync always) with small segments (64 KiB) and
# a short retention (18 s; retention runs every 60 s) on a temporary data directory, and `telex-crash soak` for
# MINUTES: 4 paced publishers (500 events/s each, one topic each), 2 live subscribers and 2 durable consumers
# committing every 100 events. Every 30 s it prints the broker's RSS and open files, events published and
# consumed in the period, publish->ack latency p50/p99 over the period and the consumers' total lag. At the end
# it checks the broker is alive and stops cleanly. Not part of .ci/run.
#
#   Scripts/soak.sh MINUTES          e.g. nice bash Scripts/soak.sh 10
# SCRATCH=DIR uses DIR as the build's scratch path.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:?usage: Scripts/soak.sh MINUTES}

swift build -c release --product telexd ${SCRATCH:+--scratch-path "$SCRATCH"}
swift build -c release --product telex-crash ${SCRATCH:+--scratch-path "$SCRATCH"}
bin=$(swift build -c release --show-bin-path ${SCRATCH:+--scratch-path "$SCRATCH"})
data=$(mktemp -d)
log=$(mktemp)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    rm -rf "$data" "$log"
}
trap cleanup EXIT

"$bin/telexd" --port "$port" --data-dir "$data" --fsync always --segment-bytes 65536 --retention-hours 0.005 \
    --log-level warning >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
echo "soak: telexd pid $pid on 127.0.0.1:$port for $minutes min; RSS at start $(grep VmRSS /proc/$pid/status | awk '{print $2}') kB," \
    "open files $(ls /proc/$pid/fd | wc -l)"

status=0
"$bin/telex-crash" soak --server "127.0.0.1:$port" --minutes "$minutes" --server-pid "$pid" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
    echo "soak: FAILED: telexd died" >&2
    cat "$log" >&2
    exit 1
fi
echo "soak: broker peak RSS (VmHWM) $(grep VmHWM /proc/$pid/status | awk '{print $2}') kB; data directory $(du -sk "$data" | cut -f1) kB;" \
    "segments $(find "$data/topics" -name '*.log' | wc -l)"
kill -TERM "$pid"
if wait "$pid"; then
    echo "soak: telexd stopped cleanly"
else
    echo "soak: FAILED: telexd exited with $? on SIGTERM" >&2
    tail -20 "$log" >&2
    status=1
fi
if grep -qi "error" "$log"; then
    echo "soak: the broker logged errors:" >&2
    grep -i "error" "$log" | head -10 >&2
fi
exit $status
