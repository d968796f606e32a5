#!/usr/bin/env bash
# Crash test: builds release telexd and telex-crash, runs telexd (fsync always) on a temporary data directory
# while `telex-crash drive` publishes on four connections (idempotent producers, each acknowledged event
# recorded), follows the log with a live subscriber and consumes it with a durable consumer that commits as it
# goes. Kills telexd with kill -9 at random moments (seeded: the seed is printed) and restarts it, CRASHES times;
# then stops the workload, kills and restarts telexd once more, reads the whole log back and checks:
#   - every acknowledged event is stored at its acknowledged offset with its payload (lost=0),
#   - no event is stored twice (idempotent retries across restarts), and nothing the subscriber saw is gone,
#   - the subscriber saw no event twice and no gap, the durable consumer resumed each session at or after its
#     last acknowledged commit (and not past the newest it sent).
# Prints `crashes=N acknowledged=N lost=N ...` and exits non-zero if anything failed.
#
#   Scripts/crash-test.sh [CRASHES]                        default 100, about 1 s per crash
#   Scripts/crash-test.sh --seed 42 10                     the same kill moments as an earlier run
#   Scripts/crash-test.sh --fault ack-before-write 20      a broker that acks before writing: must report lost > 0
# SCRATCH=DIR uses DIR as the build's scratch path.
set -euo pipefail
cd "$(dirname "$0")/.."

crashes=100
fault=""
seed=$(( $(date +%s) % 32768 ))
while [ $# -gt 0 ]; do
    case $1 in
        --fault) fault=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        *) crashes=$1; shift ;;
    esac
done

swift build -c release --product telexd ${SCRATCH:+--scratch-path "$SCRATCH"}
swift build -c release --product telex-crash ${SCRATCH:+--scratch-path "$SCRATCH"}
bin=$(swift build -c release --show-bin-path ${SCRATCH:+--scratch-path "$SCRATCH"})
data=$(mktemp -d)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
pid=""
driver=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then kill -KILL "$driver"; fi
    rm -rf "$data" "$work"
}
trap cleanup EXIT

start_broker() {
    # Without a fault the variable is not set at all (telexd refuses a value that names no fault).
    # Small segments (64 KiB), so kills also land in rolls, seals and producer snapshot writes.
    env ${fault:+TELEX_TEST_FAULT=$fault} "$bin/telexd" --port "$port" --data-dir "$data" --fsync always \
        --segment-bytes 65536 --log-level warning >>"$work/telexd.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 500); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.01
    done
    echo "crash-test: telexd did not start listening on $server" >&2
    tail -20 "$work/telexd.log" >&2
    exit 1
}
kill_broker() {
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null || true
}
echo "crash-test: seed=$seed crashes=$crashes${fault:+ fault=$fault} server=$server"
started=$(date +%s)
start_broker
"$bin/telex-crash" drive --server "$server" --dir "$work" >"$work/driver.log" 2>&1 &
driver=$!

RANDOM=$seed
for crash in $(seq 1 "$crashes"); do
    # Up to a second of load, then a kill wherever the broker happens to be.
    sleep "0.$(printf '%03d' $(( RANDOM % 900 + 100 )))"
    if ! kill -0 "$driver" 2>/dev/null; then
        echo "crash-test: the driver stopped early:" >&2
        tail -20 "$work/driver.log" >&2
        exit 1
    fi
    kill_broker
    start_broker
    if [ $(( crash % 10 )) -eq 0 ]; then echo "crash-test: $crash crashes, $(( $(date +%s) - started )) s"; fi
done

sleep 0.5
touch "$work/stop"
if ! wait "$driver"; then
    echo "crash-test: the driver failed:" >&2
    tail -20 "$work/driver.log" >&2
    exit 1
fi
driver=""
# A last kill after the workload, so the final read is of a recovered log too.
kill_broker
start_broker
status=0
"$bin/telex-crash" verify --server "$server" --dir "$work" --crashes "$crashes" || status=$?
kill -TERM "$pid"
wait "$pid" || { echo "crash-test: telexd exited with $? on SIGTERM" >&2; status=1; }
pid=""
echo "crash-test: $(( $(date +%s) - started )) s; seed=$seed; $(find "$data/topics" -name '*.log' | wc -l) segments at the end;" \
    "recoveries cut $(grep -c "cut damaged log tail" "$work/telexd.log" || true) torn tail(s);" \
    "producer snapshots ignored $(grep -c "ignoring .*producer snapshot" "$work/telexd.log" || true) time(s)"
exit $status
