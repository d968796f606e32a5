#!/usr/bin/env bash
# Side-by-side peer benchmark: Telex, NATS JetStream and Redis Streams measured in one run, one broker at a time,
# on the same machine, with the same workloads (publish on 1 connection with 256 events in flight, replay of the
# whole stream, publish→delivery latency at 5,000 ev/s for 10 s, bytes on disk per event, server peak RSS;
# medians of --runs with the samples). Prints one markdown table and one JSON line on stdout; progress on stderr.
#
#   Scripts/bench-peers.sh [--events N] [--runs N] [--corpus FILE]
#
# --corpus is a JSON Lines file, one event per line, published byte for byte to NATS and Redis, and to Telex when
# telex-bench takes --corpus (see below); without it, Bench/peers/make_corpus.py writes N deterministic ~2 KB
# article events.
# NATS and Redis are driven by Bench/peers (Go, built here in GOPATH mode from Debian's packaged client sources:
# no network needed); Telex by its own telex-bench. TELEX_BIN=DIR takes telexd and telex-bench from DIR (e.g. a
# release build folder) instead of building them with `swift build -c release` (scratch path TELEX_BENCH_SCRATCH,
# default .build).
#
# Durability, as run here (none of them compresses):
#   Telex           --fsync always: the ack follows fdatasync. The latency row also runs --fsync interval:100.
#   NATS JetStream  2.9, file storage, defaults: no fsync before the ack (2.9 fsyncs in the background every 2 min).
#   Redis Streams   7.0, appendonly yes + appendfsync everysec: each XADD is written to the AOF before its reply,
#                   fsync once a second in the background; RDB snapshots and AOF rewrites off (the AOF's growth
#                   is the stream's bytes on disk).
set -euo pipefail
cd "$(dirname "$0")/.."

events=200000
runs=3
corpus=
while [ $# -gt 0 ]; do
    case "$1" in
        --events) events=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --corpus) corpus=$(realpath -m "$2"); shift 2 ;;
        *) echo "usage: Scripts/bench-peers.sh [--events N] [--runs N] [--corpus FILE]" >&2; exit 64 ;;
    esac
done
[ -z "$corpus" ] || [ -r "$corpus" ] || { echo "bench-peers: --corpus $corpus: cannot read it" >&2; exit 66; }
say() { echo "bench-peers: $*" >&2; }

# The peers and the Go client's sources, from Debian (bookworm: redis 7.0, nats-server 2.9, Go 1.19).
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nats-server >/dev/null || missing+=(nats-server)
command -v go >/dev/null || missing+=(golang-go)
[ -d /usr/share/gocode/src/github.com/nats-io/nats.go ] || missing+=(golang-github-nats-io-go-nats-dev)
[ -d /usr/share/gocode/src/github.com/gomodule/redigo ] || missing+=(golang-github-gomodule-redigo-dev)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

if [ -n "${TELEX_BIN:-}" ]; then
    bin=$TELEX_BIN
else
    scratch=(--scratch-path "${TELEX_BENCH_SCRATCH:-.build}")
    swift build -c release "${scratch[@]}" --product telexd >&2
    swift build -c release "${scratch[@]}" --product telex-bench >&2
    bin=$(swift build -c release "${scratch[@]}" --show-bin-path)
fi
[ -x "$bin/telexd" ] && [ -x "$bin/telex-bench" ] || { echo "bench-peers: no telexd and telex-bench in $bin" >&2; exit 69; }

work=$(mktemp -d)
pid=
stop_server() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=; fi
}
trap 'stop_server; rm -rf "$work"' EXIT

say "building the Go client (GOPATH mode, Debian's nats.go and redigo)"
gocache=()
[ -n "${HOME:-}" ] || gocache=(GOCACHE="$work/gocache")
env "${gocache[@]}" GO111MODULE=off GOFLAGS= GOPATH="$work/gopath:/usr/share/gocode" \
    go build -o "$work/peers" ./Bench/peers >&2

if [ -z "$corpus" ]; then
    corpus=$work/corpus.jsonl
    say "writing $events events to $corpus"
    python3 Bench/peers/make_corpus.py seeds/articles.jsonl "$events" "$corpus"
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "bench-peers: $2 exited at startup; its log:" >&2; cat "$3" >&2; exit 70; }
        sleep 0.1
    done
    echo "bench-peers: $2 does not listen on port $1 after 10 s" >&2
    exit 70
}

# Which corpus and workloads this telex-bench can take: --corpus and --latency-only come with issue 13's bench
# work; older builds generate their own corpus (the same seeds and size, not the same bytes) and run everything.
telex_help=$("$bin/telex-bench" broker --help)
telex_corpus=()
telex_corpus_name="telex-bench's own generated corpus (this telex-bench has no --corpus)"
if grep -q -- '--corpus <' <<<"$telex_help"; then
    telex_corpus=(--corpus "$corpus")
    telex_corpus_name=$corpus
fi
latency_only=()
if grep -q -- '--latency-only' <<<"$telex_help"; then latency_only=(--latency-only); fi

run_telex() { # NAME FSYNC [telex-bench arguments...]
    local name=$1 fsync=$2 data=$work/$1 port
    shift 2
    mkdir -p "$data"
    port=$(free_port)
    "$bin/telexd" --port "$port" --data-dir "$data" --fsync "$fsync" --log-level warning 2>"$work/$name.log" &
    pid=$!
    wait_port "$port" "telexd --fsync $fsync" "$work/$name.log"
    say "Telex, fsync $fsync"
    "$bin/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" \
        --server-fsync "$fsync" --events "$events" --runs "$runs" --json-out "$work/$name.json" \
        "${telex_corpus[@]}" "$@" >&2
    stop_server
    rm -rf "$data"
}

run_peer() { # NAME (nats or redis)
    local name=$1 data=$work/$1 port
    mkdir -p "$data"
    port=$(free_port)
    case "$name" in
        nats) nats-server -a 127.0.0.1 -p "$port" -js -sd "$data" >"$work/$name.log" 2>&1 & ;;
        redis) redis-server --bind 127.0.0.1 --port "$port" --dir "$data" --appendonly yes --appendfsync everysec \
            --save '' --auto-aof-rewrite-percentage 0 >"$work/$name.log" 2>&1 & ;;
    esac
    pid=$!
    wait_port "$port" "$name" "$work/$name.log"
    say "$name"
    "$work/peers" -broker "$name" -server "127.0.0.1:$port" -corpus "$corpus" -events "$events" -runs "$runs" \
        -data-dir "$data" -server-pid "$pid" -json-out "$work/$name.json" >/dev/null
    stop_server
    rm -rf "$data"
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
run_telex always always
run_telex interval interval:100 "${latency_only[@]}"
run_peer nats
run_peer redis

python3 - "$work" "$events" "$runs" "$corpus" "$telex_corpus_name" "$load" \
    "$(nats-server --version)" "$(redis-server --version | cut -d' ' -f1-3)" <<'EOF'
import json, sys

work, events, runs, corpus, telex_corpus, load, nats_version, redis_version = sys.argv[1:]
def load_json(name):
    with open(f"{work}/{name}.json") as file:
        return json.load(file)
always, interval, nats, redis = (load_json(name) for name in ("always", "interval", "nats", "redis"))

def samples(result, name, ms=False):
    values = result.get("samples", {}).get(name) or []
    return " / ".join(f"{value:.2f}" if ms else f"{value:,}" for value in values)
def rate(result, key, sample):
    return f"{result[key]:,} ({samples(result, sample)})"
def latency(result):
    return (f"{result['latencyP50Ms']:.2f} / {result['latencyP99Ms']:.2f} "
            f"(p99 {samples(result, 'latencyP99Ms', ms=True)}; p99.9 {result['latencyP999Ms']:.2f}, max {result['latencyMaxMs']:.2f})")
def disk(result):
    value = result.get("diskBytesPerEvent")
    return "n/a" if value is None else f"{value:,} (of {result['averageEventJSONBytes']:,} B JSON)"
def rss(result):
    value = result.get("serverPeakRSSMiB")
    return "n/a" if value is None else f"{value:.1f}"

columns = [always, None, nats, redis]
def row(label, cell, interval_cell="—"):
    cells = [interval_cell if result is None else cell(result) for result in columns]
    print(f"| {label} | " + " | ".join(cells) + " |")

print(f"\nPeers side by side: {int(events):,} events per publish run, medians of {runs} (samples in brackets); "
      f"load average at the start {load}")
print(f"Corpus: {corpus} for NATS and Redis; Telex: {telex_corpus}\n")
print(f"| | Telex (fsync always) | Telex (fsync interval:100) | NATS JetStream {nats_version.split()[-1]} "
      f"| Redis Streams {redis_version.split('=')[-1]} |")
print("|---|---|---|---|---|")
row("publish ev/s, 1 connection, 256 in flight", lambda r: rate(r, "publishEventsPerSecond", "publish"))
row("replay ev/s", lambda r: rate(r, "replayEventsPerSecond", "replay"))
row(f"p50 / p99 ms at {nats['latencyRate']:,} ev/s", latency, latency(interval))
row("disk B/event", disk)
row("server peak RSS MiB", rss)
telex_latency = ("from each event's intended send time" if always.get("latencyFromIntendedSendTime")
                 else "from each event's actual send time (this telex-bench does not correct for coordinated omission)")
print("\nTelex: zlib level 1 batches of 64; acks after fdatasync (always) or before the 100 ms fsync (interval:100); "
      f"latency {telex_latency}.\nNATS JetStream: file storage, no fsync before the ack (background fsync "
      "every 2 min); ordered consumers; latency from each event's intended send time.\nRedis Streams: AOF with "
      "appendfsync everysec, written before the reply; XADD pipelined, XRANGE pages of 1,000, XREAD BLOCK; latency "
      "from each event's intended send time.\nNATS and Redis streams are deleted after each run, so their peak RSS "
      "holds one run's events; Telex keeps every run's topics.\n")
print(json.dumps({"events": int(events), "runs": int(runs), "corpus": corpus, "telexCorpus": telex_corpus,
                  "loadAverage": load, "telexFsyncAlways": always, "telexFsyncInterval100": interval,
                  "natsJetStream": nats, "redisStreams": redis}, separators=(",", ":")))
EOF
