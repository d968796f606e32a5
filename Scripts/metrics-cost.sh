#!/usr/bin/env bash
# Instructions per published event with and without metrics, counted by callgrind (not fooled by a noisy machine).
# Builds telex-metrics-cost in release, runs it under valgrind --tool=callgrind with the Prometheus backend and with
# the no-op backend at two event counts, and prints (I(large) - I(small)) / (large - small) for each and the increase.
# Usage: Scripts/metrics-cost.sh [fsync-policy, default always] [small events] [large events]
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
count() {
    valgrind --tool=callgrind --callgrind-out-file="$work/out" "$work/telex-metrics-cost" "$1" "$2" "$policy" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
declare -A per_event
for backend in none prometheus; do
    low=$(count "$backend" "$small")
    high=$(count "$backend" "$large")
    per_event[$backend]=$(awk -v a="$low" -v b="$high" -v n=$((large - small)) 'BEGIN { printf "%.1f", (b - a) / n }')
    echo "$backend: $low instructions for $small events, $high for $large: ${per_event[$backend]} per event"
done
awk -v none="${per_event[none]}" -v prom="${per_event[prometheus]}" \
    'BEGIN { printf "metrics cost: %.1f instructions per event, %.2f%% (fsync '"$policy"', 16 events per batch)\n", prom - none, (prom - none) / none * 100 }'
