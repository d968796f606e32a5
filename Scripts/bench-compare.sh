#!/usr/bin/env bash
# Side-by-side benchmark of release builds: for each LABEL=BUILD_DIR argument (a folder holding telexd and
# telex-bench, e.g. .build/release of two worktrees), starts that build's telexd (fsync always) on a free port with a
# temporary data directory and runs its telex-bench against it, one build after the other. Extra telex-bench
# arguments come from BENCH_ARGS, e.g.
#   BENCH_ARGS="--publish-and-replay-only --runs 3" Scripts/bench-compare.sh before=../old/.build/release after=.build/release
# Only figures measured side by side in one run compare: the machine's load changes between runs.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || { echo "usage: Scripts/bench-compare.sh LABEL=BUILD_DIR ..." >&2; exit 64; }
for pair in "$@"; do
    label=${pair%%=*}
    dir=${pair#*=}
    data=$(mktemp -d)
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$dir/telexd" --port "$port" --data-dir "$data" --fsync always --log-level warning 2>/dev/null &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    echo "=== $label ($dir)"
    # shellcheck disable=SC2086
    "$dir/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" \
        --server-fsync always ${BENCH_ARGS:-} 2>&1 | grep -E '^\|'
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$data"
done
