#!/usr/bin/env bash
# The archive end to end, with the real tools against a real S3 API (moto's server on loopback, behind a TCP proxy
# that is stopped to cut the store off):
#   1. telexd --archive with 1 MiB segments and a 4 MiB local budget takes MB megabytes of log (default 100);
#      every sealed segment reaches the bucket, the local directory keeps a few, and telex-sub --from beginning
#      --no-follow returns every event in order (archive → local → end);
#   2. a replica (--replica-of) serves the same archived events, refuses a publish naming the primary, and picks
#      up segments archived while it runs;
#   3. the store goes away: publishing goes on, errors are counted, and the backlog is uploaded once it is back;
#   4. kill -9 of the primary during an upload: after a restart every segment is in the bucket once, readable;
#   5. a corrupted object is never served: the read ends with DATA_LOSS naming the topic and offsets (CRC and SHA-256);
#   6. telexd restore rebuilds a data directory from the bucket that serves every archived event;
#   7. a missing bucket and rejected credentials stop telexd at startup; an unreachable store does not.
# Prints replay throughput from the archive and from local segments.
#
#   Scripts/archive.sh [--megabytes MB]        TELEX_SCRATCH=DIR builds with --scratch-path DIR; -c release with
#                                              TELEX_ARCHIVE_RELEASE=1 (for the throughput figures)
set -euo pipefail
cd "$(dirname "$0")/.."

megabytes=100
while [ $# -gt 0 ]; do
    case "$1" in
        --megabytes) megabytes=$2; shift 2 ;;
        *) echo "archive [${SECONDS}s]: unknown argument $1 (--megabytes MB)" >&2; exit 64 ;;
    esac
done
command -v moto_server >/dev/null || { echo "archive [${SECONDS}s]: moto_server is missing: pip install 'moto[server]'" >&2; exit 1; }

build=(--scratch-path "${TELEX_SCRATCH:-.build}")
if [ "${TELEX_ARCHIVE_RELEASE:-0}" = 1 ]; then build+=(-c release); fi
swift build "${build[@]}"
bin=$(swift build "${build[@]}" --show-bin-path)
tool="python3 Scripts/archive_tool.py"
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
moto_port=$(free_port)
store_port=$(free_port)
port=$(free_port)
replica_port=$(free_port)
metrics_port=$(free_port)
restored_port=$(free_port)
endpoint="http://127.0.0.1:$store_port"
bucket=telex-archive
prefix=newsroom
archive="s3://$bucket/$prefix"
topic=archive.news
export AWS_ACCESS_KEY_ID=telex-test AWS_SECRET_ACCESS_KEY=telex-test-secret AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
moto_pid="" proxy_pid="" pid="" replica_pid="" restored_pid=""

stop() {  # stop PID-VARIABLE: SIGTERM, and the broker must exit cleanly
    local p=${!1}
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p"
        for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$p" 2>/dev/null; then kill -9 "$p"; echo "archive: process $1 did not stop within 30 s of SIGTERM" >&2; exit 1; fi
        wait "$p" || { echo "archive: process $1 exited with $? on SIGTERM" >&2; exit 1; }
    fi
    printf -v "$1" '%s' ""
}
cleanup() {
    for p in "$restored_pid" "$replica_pid" "$pid" "$proxy_pid" "$moto_pid"; do
        if [ -n "$p" ]; then kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    done
    if [ "${KEEP:-0}" = 1 ]; then echo "archive [${SECONDS}s]: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "archive [${SECONDS}s]: $*" >&2; for f in "$work"/*.log; do echo "--- $f" >&2; tail -20 "$f" >&2; done; exit 1; }
wait_port() {
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "nothing listens on port $1 ($2)"
}
start_proxy() { $tool proxy "$store_port" "$moto_port" "$work/slow" & proxy_pid=$!; wait_port "$store_port" "the store proxy"; }
start_primary() {
    "$bin/telexd" --port "$port" --data-dir "$work/primary" --segment-bytes 1048576 \
        --archive "$archive" --archive-endpoint "$endpoint" --local-retention-bytes 4194304 \
        --retention-check-interval 1s --metrics-address "127.0.0.1:$metrics_port" >>"$work/primary.log" 2>&1 &
    pid=$!
    wait_port "$port" "the primary"
}
local_bytes() { du -sb --apparent-size "$work/primary/topics/$topic" | cut -f1; }
local_segments() { find "$work/primary/topics/$topic" -name '*.log' | wc -l; }
manifest_count() { $tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | wc -l; }
metric() { curl -s "http://127.0.0.1:$metrics_port/metrics" | awk -v name="$1" '$1 ~ "^"name { sum += $2 } END { print sum + 0 }'; }
# Waits until every segment below the active one is in the bucket and the local log is within a few segments.
wait_archived() {
    for _ in $(seq 1 600); do
        local sealed=$(( $(local_segments) - 1 ))
        local archived=$(manifest_count)
        if [ "$archived" -gt 0 ] && [ "$(local_bytes)" -le $((6 * 1048576)) ] \
            && $tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | tail -1 | awk -v active="$(ls "$work/primary/topics/$topic" | grep '\.log$' | sort | tail -1 | sed 's/\.log//')" '{ exit !($2 == active + 0) }'; then
            return 0
        fi
        sleep 0.5
    done
    fail "the archive did not catch up: $(manifest_count) manifests, $(local_segments) local segments, $(local_bytes) local bytes"
}
ms() { date +%s%3N; }
same_events() {  # same_events FILE-A FILE-B N: the first N events of both have the same offsets and ids
    python3 -c '
import itertools, json, sys
a, b = ([(e["offset"], e["id"]) for e in map(json.loads, itertools.islice(open(p), int(sys.argv[3])))] for p in sys.argv[1:3])
sys.exit(0 if a == b else "events differ")' "$1" "$2" "$3"
}

moto_server -p "$moto_port" >"$work/moto.log" 2>&1 & moto_pid=$!
wait_port "$moto_port" "moto_server"
start_proxy
$tool make-bucket "$endpoint" "$bucket"

events=$(( megabytes * 790 ))
$tool events "$events" "$topic" "$work/events.jsonl"
echo "archive [${SECONDS}s]: $events events, $(( $(wc -c <"$work/events.jsonl") / 1048576 )) MiB of JSON" >&2

# 1. Publish through the primary; the archive takes every sealed segment and local retention keeps a few.
start_primary
"$bin/telex-pub" --server "127.0.0.1:$port" --quiet "$work/events.jsonl" >"$work/pub.out" || fail "telex-pub: $(cat "$work/pub.out")"
wait_archived
log_bytes=$($tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | awk '{ s += $3 } END { print s }')
echo "archive [${SECONDS}s]: $(manifest_count) segments ($(( log_bytes / 1048576 )) MiB) in the bucket, $(local_segments) local ($(( $(local_bytes) / 1024 )) KiB)" >&2
[ "$log_bytes" -ge $(( megabytes * 1000 * 1000 * 9 / 10 )) ] || fail "only $log_bytes bytes of log for $megabytes MB"
start=$(ms)
"$bin/telex-sub" --server "127.0.0.1:$port" "$topic" --from beginning --no-follow >"$work/all.jsonl" 2>"$work/sub.err" \
    || fail "telex-sub from the beginning: $(cat "$work/sub.err")"
end=$(ms)
$tool check "$work/all.jsonl" "$work/events.jsonl"
archive_rate=$(( events * 1000 / (end - start + 1) ))
start=$(ms)
"$bin/telex-sub" --server "127.0.0.1:$port" "$topic" --from beginning --no-follow >"$work/again.jsonl" 2>"$work/sub.err"
end=$(ms)
cached_rate=$(( events * 1000 / (end - start + 1) ))
echo "archive [${SECONDS}s]: replay from offset 0 through the primary: $archive_rate ev/s with a cold cache (archive → local), $cached_rate ev/s again (cached)" >&2

# 2. A replica of the bucket serves the archived events, refuses publishing, and follows new segments.
archived_end=$($tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | tail -1 | awk '{ print $2 }')
"$bin/telexd" --port "$replica_port" --data-dir "$work/replica" --replica-of "$archive" --archive-endpoint "$endpoint" \
    >>"$work/replica.log" 2>&1 & replica_pid=$!
wait_port "$replica_port" "the replica"
# The replica serves at once and catches up with the bucket in its first poll.
replica_end() {
    "$bin/telex-admin" topics "$topic" --json --server "127.0.0.1:$replica_port" 2>/dev/null \
        | python3 -c 'import json, sys; rows = [json.loads(l) for l in sys.stdin if l.strip()]; print(rows[0]["end"] if rows else 0)' 2>/dev/null || echo 0
}
for _ in $(seq 1 300); do [ "$(replica_end)" -ge "$archived_end" ] && break; sleep 0.2; done
echo "archive [${SECONDS}s]: the replica caught up with the bucket (end $(replica_end))" >&2
"$bin/telex-sub" --server "127.0.0.1:$replica_port" "$topic" --from beginning --no-follow >"$work/replica.jsonl" 2>"$work/sub.err" \
    || fail "telex-sub on the replica: $(cat "$work/sub.err")"
[ "$(wc -l <"$work/replica.jsonl")" -eq "$archived_end" ] || fail "the replica served $(wc -l <"$work/replica.jsonl") events, the archive holds $archived_end"
same_events "$work/all.jsonl" "$work/replica.jsonl" "$archived_end" || fail "the replica's events differ from the primary's"
echo "archive [${SECONDS}s]: the replica served the same $archived_end archived events as the primary" >&2
if head -1 "$work/events.jsonl" | "$bin/telex-pub" --server "127.0.0.1:$replica_port" >"$work/refused.out" 2>&1; then
    fail "the replica accepted a publish"
fi
grep -q "read replica of $archive" "$work/refused.out" && grep -q "127.0.0.1:$port" "$work/refused.out" \
    || fail "the replica's refusal does not name the archive and the primary: $(cat "$work/refused.out")"
echo "archive [${SECONDS}s]: the replica refused a publish: $(grep -o 'read replica.*' "$work/refused.out" | head -1)" >&2
# More events on the primary; the replica serves them once they are archived.
head -n 3000 "$work/events.jsonl" >"$work/more.jsonl"
"$bin/telex-pub" --server "127.0.0.1:$port" --quiet "$work/more.jsonl" >/dev/null
cat "$work/more.jsonl" >>"$work/events.jsonl"
for _ in $(seq 1 600); do [ "$(replica_end)" -gt "$archived_end" ] && break; sleep 0.5; done
grown=$(replica_end)
[ "$grown" -gt "$archived_end" ] || fail "the replica's end stayed at $archived_end after new segments were archived"
echo "archive [${SECONDS}s]: the replica picked up new segments: end $archived_end -> $grown" >&2

# 3. The store goes away: publishing continues, errors are counted, and the backlog is uploaded afterwards.
kill -9 "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""
before_errors=$(metric telex_archive_errors_total)
head -n 3000 "$work/events.jsonl" | tail -n 2000 >"$work/outage.jsonl"
"$bin/telex-pub" --server "127.0.0.1:$port" --quiet "$work/outage.jsonl" >"$work/pub.out" || fail "publishing stopped while the store was down: $(cat "$work/pub.out")"
cat "$work/outage.jsonl" >>"$work/events.jsonl"
for _ in $(seq 1 100); do [ "$(metric telex_archive_errors_total)" -gt "$before_errors" ] && break; sleep 0.2; done
[ "$(metric telex_archive_errors_total)" -gt "$before_errors" ] || fail "no archive error counted while the store was down"
echo "archive [${SECONDS}s]: store down: publishing went on, $(( $(metric telex_archive_errors_total) - before_errors )) archive errors counted" >&2
start_proxy
wait_archived
echo "archive [${SECONDS}s]: store back: the backlog was uploaded ($(manifest_count) segments)" >&2

# 4. kill -9 during an upload (the proxy slowed to ~1 MB/s, the kill once segment bytes are on their way); after a
#    restart every segment is archived once, the bucket's segments follow each other, and every event is readable.
touch "$work/slow"
"$bin/telex-pub" --server "127.0.0.1:$port" --quiet "$work/more.jsonl" >/dev/null
cat "$work/more.jsonl" >>"$work/events.jsonl"
for _ in $(seq 1 300); do [ -f "$work/slow.seen" ] && break; sleep 0.1; done
[ -f "$work/slow.seen" ] || fail "no upload started within 30 s of the publish"
before_kill=$(manifest_count)
kill -9 "$pid"; wait "$pid" 2>/dev/null || true; pid=""
rm -f "$work/slow"
echo "archive [${SECONDS}s]: killed the primary with SIGKILL during an upload ($before_kill manifests in the bucket)" >&2
start_primary
wait_archived
# Exactly once: the restarted primary uploaded only what the bucket did not hold when it was killed.
after_kill=$(manifest_count)
uploaded_again=$(metric telex_archive_uploaded_segments_total)
[ "$uploaded_again" -le $((after_kill - before_kill)) ] \
    || fail "after the restart $uploaded_again segments were uploaded, but only $((after_kill - before_kill)) were missing"
echo "archive [${SECONDS}s]: after the restart: $uploaded_again uploads for the $((after_kill - before_kill)) segments the bucket lacked" >&2
$tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | awk 'NR > 1 && $1 != next_base { print "archive: segment gap or overlap at " $1 " (expected " next_base ")"; bad = 1 } { next_base = $2 } END { exit bad }' \
    || fail "the bucket's segments do not follow each other"
"$bin/telex-sub" --server "127.0.0.1:$port" "$topic" --from beginning --no-follow >"$work/all.jsonl" 2>"$work/sub.err" \
    || fail "telex-sub after kill -9: $(cat "$work/sub.err")"
$tool check "$work/all.jsonl" "$work/events.jsonl"

# 6 (before 5, which damages the bucket). telexd restore rebuilds a data directory that serves every archived event.
"$bin/telexd" restore "$archive" --archive-endpoint "$endpoint" --data-dir "$work/restored" >"$work/restore.out" 2>>"$work/restore.log" \
    || fail "telexd restore: $(cat "$work/restore.out")"
cat "$work/restore.out" >&2
"$bin/telexd" --port "$restored_port" --data-dir "$work/restored" >>"$work/restored.log" 2>&1 & restored_pid=$!
wait_port "$restored_port" "the restored broker"
archived_end=$($tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | tail -1 | awk '{ print $2 }')
start=$(ms)
"$bin/telex-sub" --server "127.0.0.1:$restored_port" "$topic" --from beginning --no-follow >"$work/restored.jsonl" 2>"$work/sub.err" \
    || fail "telex-sub on the restored directory: $(cat "$work/sub.err")"
end=$(ms)
local_rate=$(( archived_end * 1000 / (end - start + 1) ))
[ "$(wc -l <"$work/restored.jsonl")" -eq "$archived_end" ] || fail "the restored directory served $(wc -l <"$work/restored.jsonl") events, the archive holds $archived_end"
same_events "$work/all.jsonl" "$work/restored.jsonl" "$archived_end" || fail "the restored directory's events differ from the primary's"
echo "archive [${SECONDS}s]: the restored data directory served all $archived_end archived events: $local_rate ev/s from local segments" >&2
stop restored_pid
"$bin/telexd" verify --archive "$archive" --archive-endpoint "$endpoint" >"$work/verify.out" 2>&1 \
    || fail "telexd verify --archive on a clean archive: $(tail -5 "$work/verify.out")"
echo "archive [${SECONDS}s]: telexd verify --archive: $(tail -1 "$work/verify.out")" >&2

# 5. Corrupted objects are never served. Past the checksums (the manifest rewritten to match the damaged bytes), the
#    batches' CRCs catch it: the replica's read ends with DATA_LOSS naming the topic and the damaged offset. With the
#    manifest left alone, the SHA-256 check catches it first.
start_replica() {
    stop replica_pid
    rm -rf "$work/replica"
    "$bin/telexd" --port "$replica_port" --data-dir "$work/replica" --replica-of "$archive" --archive-endpoint "$endpoint" \
        >>"$work/replica.log" 2>&1 & replica_pid=$!
    wait_port "$replica_port" "the replica"
    for _ in $(seq 1 300); do [ "$(replica_end)" -gt 0 ] && break; sleep 0.2; done
}
read_corrupted() {  # read_corrupted BASE WHAT: a replay from 0 must stop before BASE with DATA_LOSS naming the topic
    if "$bin/telex-sub" --server "127.0.0.1:$replica_port" "$topic" --from beginning --no-follow >"$work/corrupt.jsonl" 2>"$work/corrupt.err"; then
        fail "a read across the $2 object succeeded"
    fi
    grep -q DATA_LOSS "$work/corrupt.err" && grep -q "$topic" "$work/corrupt.err" && grep -q "$3" "$work/corrupt.err" \
        || fail "the $2 object's error: $(cat "$work/corrupt.err")"
    [ "$(wc -l <"$work/corrupt.jsonl")" -le "$1" ] || fail "$(wc -l <"$work/corrupt.jsonl") events were served, past the $2 segment at $1"
    echo "archive [${SECONDS}s]: $2 segment $1 refused: $(grep -o 'DATA_LOSS.*' "$work/corrupt.err" | head -1 | cut -c1-220)" >&2
}
crc_base=$($tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | sed -n 3p | awk '{ print $1 }')
$tool corrupt-batch "$endpoint" "$bucket" "$prefix" "$topic" "$crc_base" >/dev/null
start_replica
read_corrupted "$crc_base" "CRC-damaged" "is damaged at offset"
if "$bin/telexd" verify --archive "$archive" --archive-endpoint "$endpoint" >"$work/verify.out" 2>&1; then
    fail "telexd verify --archive passed an archive with a damaged batch"
fi
grep -q "^$topic .*CRC" "$work/verify.out" || fail "telexd verify --archive on a damaged batch: $(tail -5 "$work/verify.out")"
echo "archive [${SECONDS}s]: telexd verify --archive found it: $(grep -m1 "^$topic .*CRC" "$work/verify.out" | cut -c1-200)" >&2
sha_base=$($tool manifests "$endpoint" "$bucket" "$prefix" "$topic" | sed -n 2p | awk '{ print $1 }')
$tool corrupt "$endpoint" "$bucket" "$prefix" "$topic" "$sha_base" >/dev/null
start_replica
read_corrupted "$sha_base" "checksum-mismatched" "its manifest says"

# 7. Bad configuration: a missing bucket and rejected credentials stop telexd at startup, naming the store; an
#    unreachable store is a warning and publishing goes on (the outage above showed the retries and the metric).
if timeout 30 "$bin/telexd" --port 0 --data-dir "$work/bad" --archive "s3://no-such-bucket/x" --archive-endpoint "$endpoint" >"$work/bad.out" 2>&1; then
    fail "telexd started on a missing bucket"
fi
grep -q "no-such-bucket" "$work/bad.out" && grep -qi "does not exist" "$work/bad.out" || fail "missing bucket: $(cat "$work/bad.out")"
echo "archive [${SECONDS}s]: missing bucket refused at startup: $(grep -o 'Error:.*' "$work/bad.out" | head -1)" >&2
closed_port=$(free_port)
"$bin/telexd" --port "$restored_port" --data-dir "$work/unreachable" --archive "$archive" \
    --archive-endpoint "http://127.0.0.1:$closed_port" >"$work/unreachable.log" 2>&1 & restored_pid=$!
wait_port "$restored_port" "the broker with an unreachable store"
head -100 "$work/events.jsonl" | "$bin/telex-pub" --server "127.0.0.1:$restored_port" --quiet >/dev/null \
    || fail "publishing failed with the store unreachable"
grep -q "archive unreachable at startup" "$work/unreachable.log" || fail "no startup warning for an unreachable store: $(cat "$work/unreachable.log")"
stop restored_pid
echo "archive [${SECONDS}s]: unreachable store at startup: a warning, and publishing went on" >&2
read -r key_id key_secret < <($tool require-auth "http://127.0.0.1:$moto_port")
if AWS_ACCESS_KEY_ID=wrong-key AWS_SECRET_ACCESS_KEY=wrong timeout 30 "$bin/telexd" --port 0 --data-dir "$work/bad" --archive "$archive" \
    --archive-endpoint "$endpoint" >"$work/bad.out" 2>&1; then
    fail "telexd started with rejected credentials"
fi
grep -q "403" "$work/bad.out" || fail "rejected credentials: $(cat "$work/bad.out")"
echo "archive [${SECONDS}s]: rejected credentials refused at startup: $(grep -o 'Error:.*' "$work/bad.out" | head -1)" >&2
AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$key_secret "$bin/telexd" --port "$restored_port" --data-dir "$work/signed" \
    --archive "$archive" --archive-endpoint "$endpoint" >"$work/signed.log" 2>&1 & restored_pid=$!
wait_port "$restored_port" "the broker with valid credentials under signature checks"
stop restored_pid
echo "archive [${SECONDS}s]: with signature checks on, telexd starts with valid credentials" >&2

stop replica_pid
stop pid
echo "archive [${SECONDS}s]: OK ($megabytes MB; telex-sub replay from offset 0: $archive_rate ev/s from the archive with a cold cache, $cached_rate ev/s cached, $local_rate ev/s from local segments)"
