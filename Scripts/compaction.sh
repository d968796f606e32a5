#!/usr/bin/env bash
# Compaction and purge through the command-line tools: telexd --compact on a topic of many versions, then
# telex-sub reads across the gaps (one newest version per article, offsets increasing, nothing reported as
# damage) and replays the latest versions, telex-admin topics keeps the offsets, telex-admin purge erases one article, telexd inspect shows the
# markers and telexd verify finds nothing wrong. TELEX_SCRATCH=DIR builds with --scratch-path DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=()
if [ -n "${TELEX_SCRATCH:-}" ]; then scratch=(--scratch-path "$TELEX_SCRATCH"); fi
swift build "${scratch[@]}"
bin=$(swift build "${scratch[@]}" --show-bin-path)
data=$(mktemp -d)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
pid=""

stop_broker() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || { echo "compaction: telexd exited with $? on SIGTERM" >&2; exit 1; }
    fi
    pid=""
}
cleanup() {
    stop_broker || true
    rm -rf "$data" "$work"
}
trap cleanup EXIT

start_broker() {
    "$bin/telexd" --port "$port" --data-dir "$data" --segment-bytes 4096 --compact 'frontpage.>' \
        --compact-tombstone-retention 1d >>"$work/telexd.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "compaction: telexd did not start listening on $server" >&2
    cat "$work/telexd.log" >&2
    exit 1
}

# 20 articles, 6 versions each, published one version of every article at a time, then article 5 deleted.
python3 - >"$work/events.jsonl" <<'PY'
import json
for version in range(6):
    for article in range(20):
        print(json.dumps({
            "specversion": "1.0", "id": f"evt-{article}-{version}", "source": "urn:telex:compaction",
            "type": "article.updated", "topic": "frontpage.home",
            "data": {"uri": f"urn:telex:frontpage:{article}", "type": "text", "version": str(version),
                     "headlines": [{"role": "main", "value": f"Article {article} version {version} " + "x" * 200}]}}))
print(json.dumps({"specversion": "1.0", "id": "evt-5-deleted", "source": "urn:telex:compaction",
                  "type": "article.deleted", "topic": "frontpage.home", "data": {"uri": "urn:telex:frontpage:5"}}))
PY
start_broker
# One event a publish, so that the versions spread over many small segments.
while IFS= read -r line; do
    printf '%s\n' "$line" | "$bin/telex-pub" --server "$server" >/dev/null
done <"$work/events.jsonl"
total=$(grep -c . "$work/events.jsonl")
"$bin/telex-admin" topics frontpage.home --json --server "$server" >"$work/before.json"

# The broker compacts at startup (then after every retention run): every segment but the active one is sealed.
stop_broker
start_broker
for _ in $(seq 1 100); do
    "$bin/telex-admin" topics frontpage.home --json --server "$server" >"$work/after.json"
    if python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); sys.exit(0 if b["bytes"] < a["bytes"] else 1)' \
        "$work/before.json" "$work/after.json"; then break; fi
    sleep 0.1
done
"$bin/telex-sub" --server "$server" 'frontpage.>' --no-follow --from beginning >"$work/read.jsonl" 2>"$work/read.err"
python3 - "$work/before.json" "$work/after.json" "$work/read.jsonl" "$total" <<'PY'
import json, sys
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
events = [json.loads(line) for line in open(sys.argv[3])]
total = int(sys.argv[4])
assert after["bytes"] < before["bytes"], f"compaction: nothing reclaimed ({before['bytes']} -> {after['bytes']} bytes)"
assert (after["start"], after["end"]) == (before["start"], before["end"]) == (0, total), "compaction: offsets moved"
offsets = [e["offset"] for e in events]
assert offsets == sorted(set(offsets)), "compaction: offsets not increasing"
assert len(events) < total, f"compaction: {len(events)} of {total} events read: nothing removed"
newest = {}
for e in events:
    newest[e["data"]["uri"]] = e
for article in range(20):
    e = newest[f"urn:telex:frontpage:{article}"]
    expected = "article.deleted" if article == 5 else "article.updated"
    assert e["type"] == expected, f"compaction: article {article} ends with {e['type']}"
    if article != 5: assert e["data"]["version"] == "5", f"compaction: article {article} newest is {e['data']['version']}"
print(f"compaction: {len(events)} of {total} events left, offsets 0..<{total} kept, "
      f"{before['bytes'] - after['bytes']} bytes reclaimed; every article's newest version there")
PY
if [ -s "$work/read.err" ]; then echo "compaction: telex-sub reported:" >&2; cat "$work/read.err" >&2; exit 1; fi
# Latest-per-article replay over the compacted topic: one line per live article (19: article 5 is deleted).
latest=$("$bin/telex-sub" --server "$server" 'frontpage.>' --latest --no-follow | grep -c .)
[ "$latest" -eq 19 ] || { echo "compaction: --latest printed $latest articles, expected 19" >&2; exit 1; }
echo "compaction: telex-sub --latest: $latest articles"

# Legal erasure of article 7: gone from the topic; the other articles stay.
"$bin/telex-admin" purge urn:telex:frontpage:7 --yes --server "$server" >"$work/purge.txt"
grep -q "frontpage.home" "$work/purge.txt" || { echo "compaction: purge removed nothing:" >&2; cat "$work/purge.txt" >&2; exit 1; }
"$bin/telex-sub" --server "$server" 'frontpage.>' --no-follow --from beginning >"$work/purged.jsonl"
if grep -q 'urn:telex:frontpage:7"' "$work/purged.jsonl"; then echo "compaction: article 7 still delivered" >&2; exit 1; fi
latest=$("$bin/telex-sub" --server "$server" 'frontpage.>' --latest --no-follow | grep -c .)
[ "$latest" -eq 18 ] || { echo "compaction: --latest printed $latest articles after the purge, expected 18" >&2; exit 1; }
echo "compaction: purge: $(tail -1 "$work/purge.txt"); $(grep -c . "$work/purged.jsonl") events left"

stop_broker
"$bin/telexd" inspect "$data" >"$work/inspect.jsonl"
markers=$(grep -c '"compacted"' "$work/inspect.jsonl" || true)
[ "$markers" -gt 0 ] || { echo "compaction: inspect shows no compaction marker" >&2; exit 1; }
"$bin/telexd" verify "$data" >"$work/verify.txt" || { echo "compaction: verify found problems:" >&2; cat "$work/verify.txt" >&2; exit 1; }
echo "compaction: inspect: $markers compacted segments; verify: $(tail -1 "$work/verify.txt")"
echo "compaction: OK"
