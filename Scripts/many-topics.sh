#!/usr/bin/env bash
# Creates, appends to and reads N topics (default 100,000) against TopicStore under `ulimit -n 1024`, restarts
# the store and reads them all again; prints times, RSS and the peak number of open files.
# Usage: Scripts/many-topics.sh [N] [always|never|interval:MS]   (env SCRATCH: build directory, default .build)
set -euo pipefail
cd "$(dirname "$0")/.."
topics="${1:-100000}"
fsync="${2:-never}"
scratch="${SCRATCH:-.build}"
swift build --build-tests --scratch-path "$scratch" >&2
ulimit -n 1024
TELEX_MANY_TOPICS="$topics" TELEX_MANY_TOPICS_FSYNC="$fsync" \
    swift test --skip-build --scratch-path "$scratch" --filter ManyTopicsMeasurement 2>&1 | grep -E 'many-topics:|✘|passed|failed'
