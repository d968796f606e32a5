#!/usr/bin/env bash
# Fuzzing: builds telex-fuzz with libFuzzer and AddressSanitizer in its own scratch directory, seeds a corpus from
# Protocol/vectors, runs libFuzzer for SECONDS (default 60) and prints one summary line with the execution count and
# coverage. Exits non-zero on a crash, naming the saved input.
#   bash Scripts/fuzz.sh [SECONDS]             fuzz; TELEX_FUZZ_CORPUS=DIR keeps and reuses a corpus across runs
#   bash Scripts/fuzz.sh --planted [SECONDS]   with the planted bug on: succeeds only if libFuzzer finds it
#   bash Scripts/fuzz.sh --reproduce FILE      runs one saved input (a crash) through the harness
# TELEX_FUZZ_ARGS adds libFuzzer flags (e.g. -use_value_profile=1, -seed=N).
set -euo pipefail
cd "$(dirname "$0")/.."

planted=0
reproduce=""
case "${1:-}" in
    --planted) planted=1; shift ;;
    --reproduce) reproduce=$2; shift 2 ;;
esac
seconds=${1:-60}
scratch=${TELEX_FUZZ_SCRATCH:-.build-fuzz-san}

# -sanitize=fuzzer,address as one flag: with two -sanitize flags the driver keeps only the last for compiling.
# lld, because gold fails on the sanitizer runtime; the export lets main find libFuzzer's driver with dlsym.
build_start=$(date +%s)
mkdir -p "$scratch"
swift build --scratch-path "$scratch" -c release --product telex-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld \
    -Xlinker --export-dynamic-symbol=LLVMFuzzerRunDriver >"$scratch/fuzz-build.log" 2>&1 \
    || { cat "$scratch/fuzz-build.log" >&2; echo "fuzz: build failed" >&2; exit 1; }
build_seconds=$(( $(date +%s) - build_start ))
bin="$(swift build --scratch-path "$scratch" -c release --show-bin-path)/telex-fuzz"

# Swift's own crash reporter would hold a crashing process for a long symbolication; libFuzzer reports instead.
export SWIFT_BACKTRACE=enable=no
if [ -n "$reproduce" ]; then
    exec "$bin" "$reproduce"
fi

run="$scratch/fuzz-runs/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$run/seeds"
corpus=${TELEX_FUZZ_CORPUS:-$run/corpus}
mkdir -p "$corpus"
seeds=$(python3 Scripts/fuzz-corpus.py Protocol/vectors "$run/seeds" "$run/telex.dict")

# With the planted bug, value profiling (libFuzzer steers by how close compared values are) finds it sooner.
extra=""
if [ "$planted" = 1 ]; then export TELEX_FUZZ_PLANTED_BUG=1; extra="-use_value_profile=1"; else unset TELEX_FUZZ_PLANTED_BUG; fi
# Inputs up to 8 KiB (the harness caps frames at 4 KiB and batches at 256 KiB inflated); 1 GiB of RSS is far above
# what one input can use, so crossing it is a finding; an input running 10 s is a hang.
status=0
"$bin" -max_total_time="$seconds" -max_len=8192 -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
    -dict="$run/telex.dict" -artifact_prefix="$run/" $extra ${TELEX_FUZZ_ARGS:-} "$corpus" "$run/seeds" >"$run/fuzz.log" 2>&1 \
    || status=$?

executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/fuzz.log" | tail -1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$run/fuzz.log" | tail -1)
cov=$(grep -o 'cov: [0-9]*' "$run/fuzz.log" | tail -1 | cut -d' ' -f2)
ft=$(grep -o 'ft: [0-9]*' "$run/fuzz.log" | tail -1 | cut -d' ' -f2)
units=$(find "$corpus" -type f | wc -l)
artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$run/fuzz.log" | tail -1)
echo "fuzz: planted=$planted seconds=$seconds executions=${executions:-0} exec/s=${rate:-0} cov=${cov:-0} ft=${ft:-0} seeds=$seeds corpus=$units build=${build_seconds}s exit=$status log=$run/fuzz.log"

if [ "$planted" = 1 ]; then
    if [ -n "$artifact" ] && grep -q 'planted bug reached' "$run/fuzz.log"; then
        echo "fuzz: found the planted bug after ${executions:-?} executions: $artifact"
        exit 0
    fi
    echo "fuzz: libFuzzer did not find the planted bug within ${seconds}s" >&2
    tail -40 "$run/fuzz.log" >&2
    exit 1
fi
if [ "$status" != 0 ] || [ -n "$artifact" ]; then
    grep -m1 -E 'ERROR: |Fatal error|telex-fuzz: ' "$run/fuzz.log" >&2 || true
    echo "fuzz: FAILED (libFuzzer exit $status); input saved at ${artifact:-<none>}; reproduce with: bash Scripts/fuzz.sh --reproduce ${artifact:-FILE}" >&2
    exit 1
fi
