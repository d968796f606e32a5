#!/usr/bin/env bash
# Progress line through a pseudo-terminal: start telexd on a free port with a temporary data directory, publish
# seeds/articles.jsonl repeated (with fresh ids) under util-linux `script` so standard error is a terminal, and check
# the captured output holds the progress line's fields; then publish with standard error to a file and check
# nothing extra is printed there, and that --progress / --no-progress override the default.
# SCRATCH_PATH picks the build directory (default .build); REPEAT how many copies of the seeds (default 400).
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=${SCRATCH_PATH:-.build}
repeat=${REPEAT:-400}
swift build --scratch-path "$scratch" --product telexd >/dev/null
swift build --scratch-path "$scratch" --product telex-pub >/dev/null
swift build --scratch-path "$scratch" --product telex-sub >/dev/null
bin=$(swift build --scratch-path "$scratch" --show-bin-path)
data=$(mktemp -d)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
pid=""

fail() {
    echo "progress-tty: $*" >&2
    exit 1
}
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    rm -rf "$data" "$work"
}
trap cleanup EXIT

"$bin/telexd" --port "$port" --data-dir "$data" >"$work/telexd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    cat "$work/telexd.log" >&2
    fail "telexd did not listen on $server"
fi

# The seeds repeated, each copy with its own event ids, so the run lasts long enough for redraws.
python3 - "$repeat" seeds/articles.jsonl >"$work/events.jsonl" <<'PY'
import json, sys
lines = [json.loads(line) for line in open(sys.argv[2]) if line.strip()]
for copy in range(int(sys.argv[1])):
    for event in lines:
        event = dict(event, id=f"{event['id']}-{copy}")
        print(json.dumps(event, ensure_ascii=False))
PY
events=$(wc -l <"$work/events.jsonl")

# On a terminal: standard error (and only it) goes to the pseudo-terminal that `script` records.
start=$(date +%s.%N)
script -qfec "'$bin/telex-pub' --server '$server' '$work/events.jsonl' >'$work/acks.jsonl'" "$work/tty.txt" \
    </dev/null >/dev/null || fail "telex-pub under script failed: $(cat "$work/tty.txt")"
seconds=$(python3 -c "import time; print(f'{time.time() - $start:.1f}')")
acked=$(grep -c '"offset"' "$work/acks.jsonl")
[ "$acked" -eq "$events" ] || fail "$acked acks for $events events"

python3 - "$work/tty.txt" "$events" <<'PY' || exit 1
import re, sys
raw = open(sys.argv[1], "rb").read().decode()
raw = re.sub(r"\n?Script (started|done) on [^\n]*\n", "", raw)  # util-linux script's own header and trailer
events = int(sys.argv[2])
redraws = raw.split("\r\x1b[K")[1:]
line = re.compile(r"^telex-pub: (\d+) events?, [\d.]+[kM]? events/s, [\d.]+ (B|KiB|MiB|GiB), (\d+)%, ETA (\S+)\r?\n?$")
if not redraws:
    sys.exit(f"progress-tty: no progress line on the terminal; captured: {raw!r}")
for text in redraws:
    if not line.match(text):
        sys.exit(f"progress-tty: unexpected progress line {text!r}")
final = line.match(redraws[-1])
if int(final.group(1)) != events or final.group(3) != "100" or final.group(4) != "0:00":
    sys.exit(f"progress-tty: final line {redraws[-1]!r} does not say {events} events, 100%, ETA 0:00")
if not raw.rstrip("\r\n").endswith(redraws[-1].rstrip("\r\n")) or not raw.endswith("\n"):
    sys.exit("progress-tty: the progress line is not ended with a newline")
percents = [int(line.match(text).group(3)) for text in redraws]
if percents != sorted(percents):
    sys.exit(f"progress-tty: percent went backwards: {percents}")
print(f"progress-tty: terminal: {len(redraws)} redraws, first {redraws[0]!r}")
print(f"progress-tty: terminal: final {redraws[-1].rstrip()!r}")
PY
echo "progress-tty: $events events published in ${seconds}s"

# Not a terminal: standard error stays empty; --progress forces the line, and --no-progress hides it on a terminal.
"$bin/telex-pub" --server "$server" --quiet seeds/articles.jsonl >"$work/summary.txt" 2>"$work/stderr.txt"
[ ! -s "$work/stderr.txt" ] || fail "stderr is not a terminal, yet telex-pub wrote: $(cat -v "$work/stderr.txt")"
grep -q "^published 11 events" "$work/summary.txt" || fail "unexpected summary: $(cat "$work/summary.txt")"
echo "progress-tty: not a terminal: standard error empty"

"$bin/telex-pub" --server "$server" --quiet --progress seeds/articles.jsonl >/dev/null 2>"$work/forced.txt"
grep -q "telex-pub: 11 events, .* events/s, .*, 100%, ETA 0:00" "$work/forced.txt" \
    || fail "--progress did not draw the line: $(cat -v "$work/forced.txt")"
echo "progress-tty: --progress to a file: $(tr -d '\r' <"$work/forced.txt" | sed 's/\x1b\[K//')"

script -qfec "'$bin/telex-pub' --server '$server' --quiet --no-progress seeds/articles.jsonl >/dev/null" \
    "$work/tty-off.txt" </dev/null >/dev/null || fail "telex-pub --no-progress under script failed"
! grep -q "telex-pub:" "$work/tty-off.txt" || fail "--no-progress still drew: $(cat -v "$work/tty-off.txt")"
echo "progress-tty: --no-progress on a terminal: nothing drawn"

# telex-sub --no-follow with standard output redirected: progress against the snapshot's end offsets.
stored=$((events + 3 * 11))  # the three runs above published the 11 seeds each
script -qfec "'$bin/telex-sub' --server '$server' '>' --no-follow >'$work/sub.jsonl'" "$work/sub-tty.txt" \
    </dev/null >/dev/null || fail "telex-sub under script failed: $(cat "$work/sub-tty.txt")"
[ "$(wc -l <"$work/sub.jsonl")" -eq "$stored" ] || fail "telex-sub printed $(wc -l <"$work/sub.jsonl") of $stored"
final=$(tr '\r' '\n' <"$work/sub-tty.txt" | sed 's/\x1b\[K//' | grep '^telex-sub: ' | tail -1)
[[ "$final" =~ ^telex-sub:\ $stored\ events,\ .*\ events/s,\ .*,\ 100%,\ ETA\ 0:00$ ]] \
    || fail "telex-sub's final progress line is '$final', expected $stored events, 100%, ETA 0:00"
echo "progress-tty: telex-sub --no-follow >file: final '$final'"
"$bin/telex-sub" --server "$server" '>' --no-follow >/dev/null 2>"$work/sub-stderr.txt"
[ ! -s "$work/sub-stderr.txt" ] || fail "telex-sub wrote to a non-terminal stderr: $(cat -v "$work/sub-stderr.txt")"
echo "progress-tty: telex-sub, stderr not a terminal: standard error empty"
echo "progress-tty: OK"
