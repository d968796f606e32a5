#!/usr/bin/env bash
# The web console in a real browser (Debian's chromium, chromium-driver and python3-selenium, headless): telexd with
# --console-address and a users file (an admin and a reader), the seeds published, then Scripts/console_browser.py
# opens every page and checks what it shows — topics, an article's versions and their diff, a consumer's lag, a live
# tail receiving an event published after the page loaded, an XSS headline rendered as text, the reader's narrower
# view and a consumer reset with its confirmation. Screenshots of each page go to the folder given as $1 (default
# .build/console-screenshots), which the script prints.
set -euo pipefail
cd "$(dirname "$0")/.."

shots=$(realpath -m "${1:-.build/console-screenshots}")
swift build --product telexd
swift build --product telex-pub
swift build --product telex-sub
bin=$(swift build --show-bin-path)
data=$(mktemp -d)
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
console_port=$(free_port)
"$bin/telexd" users add editor --file "$work/users.json" --publish '>' --subscribe '>' --consumers '*' --admin \
    >"$work/editor.token"
"$bin/telexd" users add reader --file "$work/users.json" --subscribe 'news.europe.>' --consumers 'indexer' \
    >"$work/reader.token"
"$bin/telexd" --port "$port" --data-dir "$data" --users "$work/users.json" \
    --console-address "127.0.0.1:$console_port" >"$work/telexd.log" 2>&1 &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
    rm -rf "$data" "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$console_port") 2>/dev/null && break; sleep 0.1; done

export TELEX_SERVER="127.0.0.1:$port" TELEX_TOKEN
TELEX_TOKEN=$(cat "$work/editor.token")
"$bin/telex-pub" --quiet seeds/articles.jsonl
# A durable consumer that read three events of the Italian desk and stopped: it lags behind what follows.
"$bin/telex-sub" 'news.europe.>' --consumer indexer --from beginning --limit 3 --commit-every 1 >/dev/null

mkdir -p "$shots"
status=0
/usr/bin/python3 Scripts/console_browser.py --console "http://127.0.0.1:$console_port" --pub "$bin/telex-pub" \
    --editor-token-file "$work/editor.token" --reader-token-file "$work/reader.token" --shots "$shots" || status=$?
if [ "$status" -ne 0 ]; then
    echo "console-browser: failed; telexd's log:" >&2
    tail -n 40 "$work/telexd.log" >&2
    exit "$status"
fi
echo "console-browser: screenshots in $shots"
