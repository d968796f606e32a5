#!/usr/bin/env bash
# Full disk, for real: a 20 MB tmpfs mostly filled with a ballast file holds telexd's data directory (fsync
# always). Publish until publishes fail, then check that the errors are STORAGE_FAILURE "no space left on
# device writing news.world", that every acknowledged event reads back, that the broker still serves reads, and
# that publishing resumes once the ballast is deleted. Needs root (mount); skips with exit 0 otherwise.
# Usage: Scripts/disk-full.sh   (SCRATCH=DIR builds in DIR instead of .build)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "disk-full: skipped: mounting a tmpfs needs root"
    exit 0
fi
mnt=$(mktemp -d)
work=$(mktemp -d)
if ! mount -t tmpfs -o size=20m tmpfs "$mnt" 2>"$work/mount.txt"; then
    echo "disk-full: skipped: mount -t tmpfs failed: $(head -1 "$work/mount.txt")"
    rm -rf "$mnt" "$work"
    exit 0
fi
pid=""
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
    umount "$mnt" || true
    rm -rf "$mnt" "$work"
}
trap cleanup EXIT
fail() {
    echo "disk-full: FAILED: $*" >&2
    tail -20 "$work/telexd.log" >&2 || true
    exit 1
}

# SCRATCH: another build directory (as Scripts/abuse.sh takes it).
swift build ${SCRATCH:+--scratch-path "$SCRATCH"}
bin=$(swift build --show-bin-path ${SCRATCH:+--scratch-path "$SCRATCH"})
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
topic=news.world

# 17 MB of ballast leaves about 3 MB for the broker: about 200 events of 16 KB.
dd if=/dev/zero of="$mnt/ballast" bs=1M count=17 status=none
"$bin/telexd" --port "$port" --data-dir "$mnt/data" --fsync always --segment-bytes 1048576 \
    >"$work/telexd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null || fail "telexd did not start"

# Files of 20 events of about 16 KB each, random so compression does not shrink them; ids say file and line.
python3 - "$work" "$topic" <<'EOF'
import base64, json, os, sys
work, topic = sys.argv[1], sys.argv[2]
for file in range(1, 31):
    with open(f"{work}/batch{file}.jsonl", "w") as out:
        for line in range(1, 21):
            body = base64.b64encode(os.urandom(12000)).decode()
            event = {"specversion": "1.0", "id": f"e{file}-{line}", "source": "urn:telex:disk-full",
                     "type": "article.created", "topic": topic,
                     "data": {"uri": f"urn:telex:disk-full:{file}-{line}", "headline": f"{file}-{line}", "body": body}}
            out.write(json.dumps(event) + "\n")
EOF

# Publish file after file; a failed run's first N events were acknowledged (it says how many).
: >"$work/acked.txt"
failures=0
published=0
error=""
for file in $(seq 1 25); do
    if "$bin/telex-pub" --server "$server" "$work/batch$file.jsonl" \
        >"$work/acks$file.jsonl" 2>"$work/error$file.txt"; then
        python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in open(sys.argv[1]) if l.strip()]' \
            "$work/acks$file.jsonl" >>"$work/acked.txt"
        published=$file
        continue
    fi
    failures=$((failures + 1))
    [ -n "$error" ] || error=$(head -1 "$work/error$file.txt")
    grep -q "STORAGE_FAILURE: no space left on device writing $topic" "$work/error$file.txt" \
        || fail "publish $file failed with another error: $(head -1 "$work/error$file.txt")"
    partial=$(sed -n 's/.*(\([0-9]*\) records were acknowledged before it stopped).*/\1/p' \
        "$work/error$file.txt" | head -1)
    [ -n "$partial" ] && [ "$partial" -gt 0 ] && head -n "$partial" "$work/batch$file.jsonl" \
        | python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in sys.stdin]' >>"$work/acked.txt"
    [ "$failures" -ge 3 ] && break
done
[ "$failures" -ge 3 ] || fail "25 files published without filling the disk (published $published)"
kill -0 "$pid" 2>/dev/null || fail "telexd exited on a full disk"

# Every acknowledged event reads back, once: the broker still serves reads.
check_readback() {
    "$bin/telex-sub" --server "$server" "$topic" --no-follow --from beginning >"$work/readback.jsonl" \
        || fail "telex-sub could not read $topic back"
    python3 - "$work/acked.txt" "$work/readback.jsonl" <<'EOF' || fail "acknowledged events missing"
import json, sys
acked = [line.strip() for line in open(sys.argv[1]) if line.strip()]
read = [json.loads(line)["id"] for line in open(sys.argv[2]) if line.strip()]
missing = set(acked) - set(read)
dupes = len(read) - len(set(read))
if missing or dupes:
    print(f"disk-full: {len(missing)} acknowledged events missing, {dupes} read twice", file=sys.stderr)
    sys.exit(1)
EOF
}
check_readback
acked=$(grep -c . "$work/acked.txt")

# Free the space: publishing resumes by itself.
rm "$mnt/ballast"
"$bin/telex-pub" --server "$server" "$work/batch30.jsonl" >"$work/acks30.jsonl" 2>"$work/error30.txt" \
    || fail "publishing did not resume after freeing space: $(head -1 "$work/error30.txt")"
python3 -c 'import json,sys; [print(json.loads(l)["id"]) for l in open(sys.argv[1]) if l.strip()]' \
    "$work/acks30.jsonl" >>"$work/acked.txt"
check_readback
echo "disk-full: acknowledged=$acked failed_publishes=$failures lost=0 resumed=20 error=\"${error#telex-pub: }\""
