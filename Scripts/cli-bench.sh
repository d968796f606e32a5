#!/usr/bin/env bash
# Benchmark of the command-line tools: `telex-pub --quiet FILE` (events/s and the tool's peak RSS) and
# `telex-sub 'PATTERN' --no-follow > FILE` (events/s, line count checked), on N generated ~2.4 KB CloudEvents
# (deterministic: the seed articles of seeds/articles.jsonl with unique ids and uris and body text drawn from the
# seeds' own sentences). Medians of --runs; prints a markdown table and one JSON line.
#
#   Scripts/cli-bench.sh [--events N] [--runs R]             builds release, starts telexd (fsync always)
#   Scripts/cli-bench.sh --server HOST:PORT --bin DIR ...     uses a running broker and built binaries
#
# Each run publishes to its own topics (cb.<nonce>.<run>.<seed topic>), so runs against one broker never mix.
# TELEX_BENCH_SCRATCH names another build folder than .build.
set -euo pipefail
cd "$(dirname "$0")/.."

events=100000
runs=3
server=""
bin=""
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --server) server=$2; shift 2 ;;
        --bin) bin=$2; shift 2 ;;
        *) echo "cli-bench: unknown argument $1 (--events N, --runs R, --server HOST:PORT, --bin DIR)" >&2; exit 64 ;;
    esac
done
if [ -n "$server" ] && [ -z "$bin" ]; then echo "cli-bench: --server needs --bin DIR" >&2; exit 64; fi

work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$bin" ]; then
    scratch=(--scratch-path "${TELEX_BENCH_SCRATCH:-.build}")
    for product in telexd telex-pub telex-sub; do swift build -c release "${scratch[@]}" --product "$product" >&2; done
    bin=$(swift build -c release "${scratch[@]}" --show-bin-path)
fi
if [ -z "$server" ]; then
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    mkdir -p "$work/data"
    "$bin/telexd" --port "$port" --data-dir "$work/data" --fsync always --log-level warning 2>"$work/telexd.log" &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    server="127.0.0.1:$port"
fi

# The corpus: topics carry the placeholder RUN, replaced per run.
python3 - "$events" "$work/events.jsonl" <<'EOF'
import json, random, re, sys
count, path = int(sys.argv[1]), sys.argv[2]
seeds = [json.loads(line) for line in open("seeds/articles.jsonl") if line.strip()]
templates = [e for e in seeds if e["type"] != "article.deleted"]
sentences = []
for event in seeds:
    data = event["data"]
    for part in data.get("bodies", []) + data.get("headlines", []) + data.get("descriptions", []):
        text = re.sub(r"<[^>]+>", " ", str(part.get("value", "")))
        sentences += [s.strip().rstrip(".") + "." for s in re.split(r"[.!?]\s+", text) if len(s.strip()) > 20]
with open(path, "w", encoding="utf-8") as out:
    for index in range(count):
        rng = random.Random(index)
        event = json.loads(json.dumps(templates[index % len(templates)]))
        event["id"] = "cb-%08d-%04x" % (index, rng.getrandbits(16))
        uri = "%s#cb-%d" % (event["data"]["uri"], index)
        event["data"]["uri"] = uri
        event["subject"] = uri
        event["time"] = "2024-03-%02dT%02d:%02d:%02d.%03dZ" % (
            1 + index // 86400 % 28, index // 3600 % 24, index // 60 % 60, index % 60, index % 1000)
        event["topic"] = "cb.RUN." + event["topic"]
        body = {"role": "text", "contentType": "text/plain", "value": ""}
        event["data"]["bodies"] = [body]
        words = []
        while len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()) < 2300:
            words.append(rng.choice(sentences))
            body["value"] = " ".join(words)
        out.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
EOF
bytes=$(wc -c <"$work/events.jsonl")
nonce=$(python3 -c 'import secrets; print(secrets.token_hex(3))')

pub_samples=()
rss_samples=()
sub_samples=()
for run in $(seq 1 "$runs"); do
    prefix="cb.x$nonce$run"
    sed "s/\"topic\":\"cb\.RUN\./\"topic\":\"$prefix./" "$work/events.jsonl" >"$work/run.jsonl"
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$work/time.txt" "$bin/telex-pub" --server "$server" --quiet "$work/run.jsonl" >"$work/pub.txt"
    end=$(date +%s.%N)
    grep -q "published $events events" "$work/pub.txt" || { echo "cli-bench: telex-pub: $(cat "$work/pub.txt")" >&2; exit 1; }
    pub_samples+=("$(python3 -c "print(round($events / ($end - $start)))")")
    rss_samples+=("$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$work/time.txt")")
    start=$(date +%s.%N)
    "$bin/telex-sub" --server "$server" "$prefix.>" --no-follow >"$work/out.jsonl"
    end=$(date +%s.%N)
    lines=$(wc -l <"$work/out.jsonl")
    [ "$lines" -eq "$events" ] || { echo "cli-bench: telex-sub printed $lines lines for $events events" >&2; exit 1; }
    sub_samples+=("$(python3 -c "print(round($events / ($end - $start)))")")
    echo "cli-bench: run $run: telex-pub ${pub_samples[-1]} ev/s, ${rss_samples[-1]} MiB; telex-sub ${sub_samples[-1]} ev/s" >&2
    rm -f "$work/out.jsonl"
done

python3 - "$events" "$bytes" "${pub_samples[*]}" "${rss_samples[*]}" "${sub_samples[*]}" <<'EOF'
import json, statistics, sys
events, size = int(sys.argv[1]), int(sys.argv[2])
pub, rss, sub = ([float(x) for x in arg.split()] for arg in sys.argv[3:6])
rows = [
    ("`telex-pub --quiet FILE`", "ev/s", pub, 50000, lambda v: v >= 50000, ">= 50,000"),
    ("`telex-pub` peak RSS", "MiB", rss, 64, lambda v: v <= 64, "<= 64"),
    ("`telex-sub PATTERN --no-follow > FILE`", "ev/s", sub, 100000, lambda v: v >= 100000, ">= 100,000"),
]
print(f"\n{events:,} events, {size / events:,.0f} B per line on average\n")
print("| workload | unit | median | samples | target | met |")
print("|---|---|---|---|---|---|")
result = {"events": events, "bytes_per_event": round(size / events)}
for (name, unit, samples, _, met, target), key in zip(rows, ["pub_events_per_s", "pub_peak_rss_mib", "sub_events_per_s"]):
    median = statistics.median(samples)
    text = " / ".join(f"{v:,.1f}" if unit == "MiB" else f"{v:,.0f}" for v in samples)
    print(f"| {name} | {unit} | {median:,.1f} | {text} | {target} | {'yes' if met(median) else 'NO'} |")
    result[key] = median
    result[key + "_samples"] = samples
print()
print(json.dumps(result))
EOF
