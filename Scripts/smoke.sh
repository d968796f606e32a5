#!/usr/bin/env bash
# Smoke test: build, start telexd on a free port with a temporary data directory, publish seeds/ with
# telex-pub, read everything back with telex-sub and compare, restart telexd and compare again, stop it.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build
bin=$(swift build --show-bin-path)
data=$(mktemp -d)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
pid=""

stop_broker() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || { echo "smoke: telexd exited with $? on SIGTERM" >&2; exit 1; }
    fi
    pid=""
}
cleanup() {
    stop_broker || true
    rm -rf "$data" "$work"
}
trap cleanup EXIT

start_broker() {
    "$bin/telexd" --port "$port" --data-dir "$data" >>"$work/telexd.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "smoke: telexd did not start listening on $server" >&2
    cat "$work/telexd.log" >&2
    exit 1
}

# Events compared without the broker's additions and with keys sorted, one per line, in a stable order.
normalize() {
    python3 -c '
import json, sys
rows = []
for line in sys.stdin:
    if line.strip():
        event = json.loads(line)
        event.pop("offset", None); event.pop("brokertime", None)
        rows.append(json.dumps(event, sort_keys=True, ensure_ascii=False))
print("\n".join(sorted(rows)))'
}

check_readback() {
    local label=$1
    "$bin/telex-sub" --server "$server" '>' --no-follow --from beginning >"$work/readback.jsonl"
    normalize <"$work/readback.jsonl" >"$work/actual.txt"
    if ! diff -u "$work/expected.txt" "$work/actual.txt" >"$work/diff.txt"; then
        echo "smoke: $label: events read back differ from seeds/" >&2
        head -50 "$work/diff.txt" >&2
        exit 1
    fi
    echo "smoke: $label: $(wc -l <"$work/readback.jsonl") events read back match seeds/"
}

start_broker
normalize <seeds/articles.jsonl >"$work/expected.txt"
"$bin/telex-pub" --server "$server" seeds/articles.jsonl >"$work/acks.jsonl"
expected_count=$(grep -c . seeds/articles.jsonl)
acked=$(grep -c '"offset"' "$work/acks.jsonl")
[ "$acked" -eq "$expected_count" ] || { echo "smoke: $acked acks for $expected_count events" >&2; exit 1; }
echo "smoke: published $acked events"
check_readback "first run"

# A bad line stops telex-pub with its line number and field, and a non-zero exit.
printf '%s\n' '{"specversion":"1.0","id":"x","source":"s","type":"article.created","topic":"news.world","data":{}}' \
    | "$bin/telex-pub" --server "$server" 2>"$work/bad.txt" && { echo "smoke: bad line accepted" >&2; exit 1; }
grep -q "line 1" "$work/bad.txt" && grep -q "data.uri" "$work/bad.txt" \
    || { echo "smoke: unclear error for a bad line:" >&2; cat "$work/bad.txt" >&2; exit 1; }
echo "smoke: bad line rejected: $(head -1 "$work/bad.txt")"

stop_broker
start_broker
check_readback "after restart"

# The offline inspector sees every batch with a valid CRC.
stop_broker
"$bin/telexd" inspect "$data" >"$work/inspect.jsonl"
python3 - "$work/inspect.jsonl" "$expected_count" <<'PY'
import json, sys
# Key index lines (one per sealed segment's .keys, STORAGE.md §10) are not batches.
batches = [b for b in map(json.loads, open(sys.argv[1])) if "keyIndex" not in b]
assert batches and all(b.get("crcValid") for b in batches), "inspect: missing batches or an invalid CRC"
records = sum(b["recordCount"] for b in batches)
assert records == int(sys.argv[2]), f"inspect: {records} records, expected {sys.argv[2]}"
print(f"smoke: inspect: {len(batches)} batches, {records} records, all CRCs valid")
PY
echo "smoke: OK"
