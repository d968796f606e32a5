#!/usr/bin/env bash
# Abuse test: builds release, starts telexd with a temporary data directory, and runs Scripts/abuse.py
# against it: 1,000 idle connections that never send HELLO, slow-loris connections trickling HELLO, a
# publisher that never reads its acks and a subscriber that never reads, while a well-behaved client publishes
# and receives. Prints each client's fate, the broker's peak RSS (VmHWM) and the good client's p99
# publish->ack latency, and checks that the broker survived and stops cleanly. Not part of .ci/run.
#
#   Scripts/abuse.sh            about a minute after the build (the abusers run 20 s)
#   Scripts/abuse.sh --long     the abusers run 2 minutes, with 20 slow-loris connections
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=20
slow_loris=5
if [ "${1:-}" = "--long" ]; then seconds=120; slow_loris=20; fi
handshake_timeout=10

swift build -c release --product telexd ${SCRATCH:+--scratch-path "$SCRATCH"}
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

ulimit -n 4096
"$bin/telexd" --port "$port" --data-dir "$data" --handshake-timeout "$handshake_timeout" --log-level warning \
    >"$log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
echo "abuse: telexd pid $pid on 127.0.0.1:$port, handshake timeout ${handshake_timeout} s, abusers for ${seconds} s"
echo "abuse: broker RSS at start: $(grep VmRSS /proc/$pid/status | awk '{print $2, $3}')"

status=0
python3 Scripts/abuse.py --port "$port" --seconds "$seconds" --slow-loris "$slow_loris" \
    --handshake-timeout "$handshake_timeout" || status=$?

if ! kill -0 "$pid" 2>/dev/null; then
    echo "abuse: FAILED: telexd died" >&2
    cat "$log" >&2
    exit 1
fi
echo "abuse: broker peak RSS (VmHWM): $(grep VmHWM /proc/$pid/status | awk '{print $2, $3}');" \
    "now (VmRSS): $(grep VmRSS /proc/$pid/status | awk '{print $2, $3}');" \
    "open files: $(ls /proc/$pid/fd | wc -l)"
kill -TERM "$pid"
if wait "$pid"; then
    echo "abuse: telexd survived and stopped cleanly"
else
    echo "abuse: FAILED: telexd exited with $? on SIGTERM" >&2
    cat "$log" >&2
    status=1
fi
pid=""
exit "$status"
