#!/usr/bin/env bash
# The newsroom features end to end, with the real tools: 50 articles × 3 versions over news.world and news.europe
# (every fifth article moves to news.europe for its last version), 10 of them then deleted. Checks that
# `telex-sub 'news.>' --latest --no-follow` prints exactly one line per live article, each its newest version, and
# that telex-history lists an article's versions oldest first, with --at and --diff (PROTOCOL.md §8.9, §8.10).
set -euo pipefail
cd "$(dirname "$0")/.."

swift build
bin=$(swift build --show-bin-path)
data=$(mktemp -d)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export TELEX_SERVER="127.0.0.1:$port"
"$bin/telexd" --port "$port" --data-dir "$data" >"$work/telexd.log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
    rm -rf "$data" "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
fail() { echo "newsroom: $*" >&2; exit 1; }

# One file per round, so that every version of an article is appended at a later broker time than the one before.
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def event(n, version, kind):
    uri = f"urn:telex:newsroom-test:article-{n}"
    topic = "news.europe" if (n % 5 == 0 and version == 3) else "news.world"
    data = {"uri": uri}
    if kind != "article.deleted":
        data.update({"type": "text", "version": str(version), "versionCreated": f"2026-11-30T08:0{version}:00Z",
                     "language": "en", "by": "Desk " + ("A" if version < 3 else "B"),
                     "headlines": [{"role": "main", "value": f"Story {n}, version {version}"}],
                     "bodies": [{"role": "main", "contentType": "text/plain", "value": f"Body of story {n} as of version {version}."}]})
    else:
        topic = "news.europe" if n % 5 == 0 else "news.world"
    return {"specversion": "1.0", "id": f"n{n}-v{version}", "source": "urn:telex:newsroom-test", "type": kind,
            "topic": topic, "data": data}
for version in (1, 2, 3):
    with open(f"{work}/round{version}.jsonl", "w") as out:
        for n in range(50):
            out.write(json.dumps(event(n, version, "article.created" if version == 1 else "article.updated")) + "\n")
with open(f"{work}/deletions.jsonl", "w") as out:
    for n in range(0, 50, 5):
        out.write(json.dumps(event(n, 4, "article.deleted")) + "\n")
PY
for round in round1 round2 round3 deletions; do
    "$bin/telex-pub" --quiet "$work/$round.jsonl"
    sleep 0.05
done

"$bin/telex-sub" 'news.>' --latest --no-follow >"$work/latest.jsonl"
python3 - "$work/latest.jsonl" <<'PY' || exit 1
import json, sys
lines = [json.loads(line) for line in open(sys.argv[1])]
uris = [line["data"]["uri"] for line in lines]
expected = {f"urn:telex:newsroom-test:article-{n}" for n in range(50) if n % 5 != 0}
assert len(lines) == 40, f"expected 40 lines (one per live article), got {len(lines)}"
assert set(uris) == expected and len(set(uris)) == 40, "not exactly the live articles, once each"
assert all(line["data"]["version"] == "3" and line["type"] == "article.updated" for line in lines), "not every line is the newest version"
print(f"newsroom: --latest --no-follow printed {len(lines)} lines, one per live article, each version 3")
PY
# A full replay would have printed every version.
full=$("$bin/telex-sub" 'news.>' --no-follow | wc -l)
[ "$full" -eq 160 ] || fail "a full replay printed $full events, expected 160"

uri=urn:telex:newsroom-test:article-7
"$bin/telex-history" "$uri" >"$work/history.txt"
cat "$work/history.txt"
[ "$(wc -l <"$work/history.txt")" -eq 3 ] || fail "telex-history $uri printed $(wc -l <"$work/history.txt") lines, expected 3"
grep -q "version 1" <(sed -n 1p "$work/history.txt") && grep -q "version 3" <(sed -n 3p "$work/history.txt") \
    || fail "telex-history is not oldest first"
"$bin/telex-history" "$uri" --json >"$work/history.jsonl"
second=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1])][1]["brokertime"])' "$work/history.jsonl")
"$bin/telex-history" "$uri" --at "$second" | grep -q "version 2" || fail "--at $second did not print version 2"
"$bin/telex-history" "$uri" --diff | tee "$work/diff.txt"
grep -q 'headline: "Story 7, version 1" → "Story 7, version 2"' "$work/diff.txt" || fail "--diff did not show the headline change"
grep -q 'byline: "Desk A" → "Desk B"' "$work/diff.txt" || fail "--diff did not show the byline change"
moved=urn:telex:newsroom-test:article-10
"$bin/telex-history" "$moved" >"$work/moved.txt"
[ "$(wc -l <"$work/moved.txt")" -eq 4 ] && grep -q "news.europe .*(deleted)" <(tail -1 "$work/moved.txt") \
    || { cat "$work/moved.txt" >&2; fail "history of a moved, deleted article is not its 4 versions ending in the deletion"; }
echo "newsroom: telex-history lists versions oldest first across topics; --at and --diff work"
