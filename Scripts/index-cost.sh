#!/usr/bin/env bash
# Instructions per published event that the key index adds to the broker's publish path, counted by callgrind
# (not fooled by a noisy machine; Protocol/STORAGE.md §14.4). Builds telex-metrics-cost in release and runs it under
# valgrind --tool=callgrind with the key index on and off (TELEX_NO_KEY_INDEX=1) at two event counts, for codec
# none and zlib batches, and prints (I(large) - I(small)) / (large - small) for each and the index's share of the
# broker's publish path and of the whole publish (the producer's encoding and compression included).
# Usage: Scripts/index-cost.sh [fsync-policy, default always] [small events] [large events]
set -euo pipefail
cd "$(dirname "$0")/.."
policy=${1:-always}
small=${2:-8000}
large=${3:-40000}
scratch=${SCRATCH:-.build}
swift build -c release --product telex-metrics-cost --scratch-path "$scratch" >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# valgrind 3.19 cannot read the release binary's debug info: measure a stripped copy.
cp "$scratch/release/telex-metrics-cost" "$work/telex-metrics-cost"
strip "$work/telex-metrics-cost"
count() {  # codec, index (on|off), events
    TELEX_COST_CODEC=$1 TELEX_NO_KEY_INDEX=$([ "$2" = off ] && echo 1 || echo 0) \
        valgrind --tool=callgrind --callgrind-out-file="$work/out" "$work/telex-metrics-cost" none "$3" "$policy" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
for codec in none zlib; do
    declare -A per_event=()
    for index in off on; do
        low=$(count "$codec" "$index" "$small")
        high=$(count "$codec" "$index" "$large")
        per_event[$index]=$(awk -v a="$low" -v b="$high" -v n=$((large - small)) 'BEGIN { printf "%.1f", (b - a) / n }')
        echo "codec $codec, key index $index: ${per_event[$index]} instructions per event"
    done
    low=$(TELEX_COST_CODEC=$codec valgrind --tool=callgrind --callgrind-out-file="$work/out" "$work/telex-metrics-cost" build "$small" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    high=$(TELEX_COST_CODEC=$codec valgrind --tool=callgrind --callgrind-out-file="$work/out" "$work/telex-metrics-cost" build "$large" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
    build=$(awk -v a="$low" -v b="$high" -v n=$((large - small)) 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "codec $codec, producing the batches (client): $build instructions per event"
    awk -v off="${per_event[off]}" -v on="${per_event[on]}" -v build="$build" -v codec="$codec" \
        'BEGIN { printf "key index cost, codec %s: %.1f instructions per event: %.2f%% of the broker'"'"'s publish path, %.2f%% of the whole publish (producer + broker; fsync '"$policy"', 16 events per batch)\n", codec, on - off, (on - off) / off * 100, (on - off) / (off + build) * 100 }'
done
