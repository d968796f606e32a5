#!/usr/bin/env bash
# Benchmark: builds release, starts telexd (fsync always) on a free port with a temporary data directory, runs
# telex-bench against it (floors, publish, replay, 4-connection publish, latency, disk, peak RSS), runs
# Scripts/cli-bench.sh against the same broker when it exists, stops it, starts a second telexd with
# --fsync interval:100 for a latency-only run, and prints ONE table of issue 13's targets (workload | result
# (median, samples) | target | met?) and one JSON line. Extra arguments go to both telex-bench runs, e.g.
#   Scripts/bench.sh --runs 1 --events 50000
#   Scripts/bench.sh --corpus events.jsonl --key-field data.uri      (any JSON Lines corpus)
#   Scripts/bench.sh --corpus-style easy                             (the corpus of issues 5-12)
# --publish-and-replay-only skips the parallel publish, the latency runs, the second broker and cli-bench.
# TELEX_BENCH_TLS=1 runs the brokers with TLS (a throwaway CA and certificate made with openssl) and the client
# with --tls-ca, e.g. TELEX_BENCH_TLS=1 Scripts/bench.sh --publish-and-replay-only. TELEX_BENCH_SCRATCH names
# another build folder than .build; TELEX_BENCH_FSYNC another fsync policy than always for the first broker;
# TELEX_BENCH_CLI_ARGS extra arguments for cli-bench.sh (e.g. "--events 10000 --runs 1").
set -euo pipefail
cd "$(dirname "$0")/.."

scratch=(--scratch-path "${TELEX_BENCH_SCRATCH:-.build}")
swift build -c release "${scratch[@]}" --product telexd >&2
swift build -c release "${scratch[@]}" --product telex-bench >&2
only_publish_and_replay=0
for argument in "$@"; do
    [ "$argument" = --publish-and-replay-only ] && only_publish_and_replay=1
done
if [ "$only_publish_and_replay" = 0 ] && [ -f Scripts/cli-bench.sh ]; then
    swift build -c release "${scratch[@]}" --product telex-pub >&2
    swift build -c release "${scratch[@]}" --product telex-sub >&2
fi
bin=$(swift build -c release "${scratch[@]}" --show-bin-path)
work=$(mktemp -d)
fsync=${TELEX_BENCH_FSYNC:-always}
pid=
trap 'if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; rm -rf "$work"' EXIT

tls_server=()
tls_client=()
if [ "${TELEX_BENCH_TLS:-0}" = 1 ]; then
    certs="$work/certificates"
    mkdir -p "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=bench CA" \
        -keyout "$certs/ca.key" -out "$certs/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$certs/server.key" -out "$certs/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$certs/server.ext"
    openssl x509 -req -in "$certs/server.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" -CAcreateserial -days 1 \
        -extfile "$certs/server.ext" -out "$certs/server.pem" 2>/dev/null
    tls_server=(--tls-cert "$certs/server.pem" --tls-key "$certs/server.key")
    tls_client=(--tls-ca "$certs/ca.pem")
fi

# start_broker NAME FSYNC: a telexd on a free port with its own data directory ($work/NAME); sets pid, port, data.
start_broker() {
    data="$work/$1"
    mkdir -p "$data"
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$bin/telexd" --port "$port" --data-dir "$data" --fsync "$2" --log-level warning "${tls_server[@]}" \
        2>"$work/$1.log" &
    pid=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench.sh: telexd ($1, --fsync $2) did not start listening; its log:" >&2
    cat "$work/$1.log" >&2
    exit 1
}

stop_broker() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

# telex-bench's own table goes to stderr: the table below is the one to read.
start_broker main "$fsync"
"$bin/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" \
    --server-fsync "$fsync" --json-out "$work/main.json" "${tls_client[@]}" "$@" >&2

cli_status="not measured (--publish-and-replay-only)"
if [ "$only_publish_and_replay" = 0 ]; then
    if [ "${TELEX_BENCH_TLS:-0}" = 1 ]; then
        cli_status="not measured (TLS run: Scripts/cli-bench.sh takes no CA)"
    elif [ -f Scripts/cli-bench.sh ]; then
        # Its markdown table goes to stderr; its last JSON line feeds the telex-pub / telex-sub rows.
        # shellcheck disable=SC2086
        if bash Scripts/cli-bench.sh --server "127.0.0.1:$port" --bin "$bin" ${TELEX_BENCH_CLI_ARGS:-} >"$work/cli.txt"; then
            cat "$work/cli.txt" >&2
            grep '^{' "$work/cli.txt" | tail -n 1 >"$work/cli.json" || true
            cli_status="measured"
        else
            status=$?
            cat "$work/cli.txt" >&2
            cli_status="not measured (Scripts/cli-bench.sh failed, exit $status)"
        fi
    else
        cli_status="not measured (Scripts/cli-bench.sh missing)"
    fi
fi
stop_broker

if [ "$only_publish_and_replay" = 0 ]; then
    start_broker interval interval:100
    "$bin/telex-bench" broker --server "127.0.0.1:$port" --data-dir "$data" --server-pid "$pid" --server-fsync interval:100 \
        --json-out "$work/interval.json" "${tls_client[@]}" "$@" --latency-only >&2
    stop_broker
fi

python3 - "$work" "$cli_status" <<'EOF'
import json, os, sys

work, cli_status = sys.argv[1], sys.argv[2]

def load(name):
    path = os.path.join(work, name)
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return None
    with open(path) as file:
        return json.loads(file.read())

main, interval, cli = load("main.json"), load("interval.json"), load("cli.json")

def samples(values, format):
    return " / ".join(format(value) for value in values)

def events_per_second(value):
    return f"{value:,.0f}"

def rate_row(label, key, sample_key, target):
    value = main.get(key)
    if value is None:
        return [label, "not run", f"≥ {target:,} ev/s" if target else "—", "—"]
    result = f"{value:,} ev/s ({samples(main['samples'][sample_key], events_per_second)})"
    if not target:
        return [label, result, "—", "—"]
    return [label, result, f"≥ {target:,} ev/s", "yes" if value >= target else "no"]

def latency_row(label, summary, target):
    if summary is None or summary.get("latencyP99Ms") is None:
        return [label, "not run", f"≤ {target} ms", "—"]
    p99 = summary["latencyP99Ms"]
    result = (f"{p99:.3f} ms ({samples(summary['samples']['latencyP99Ms'], lambda v: f'{v:.3f}')}); "
              f"p50 {summary['latencyP50Ms']:.3f}, p99.9 {summary['latencyP999Ms']:.3f}, "
              f"max {summary['latencyMaxMs']:.3f} ms; publish→ack p50 {summary['ackP50Ms']:.3f}, "
              f"p99 {summary['ackP99Ms']:.3f} ms")
    return [label, result, f"≤ {target} ms", "yes" if p99 <= target else "no"]

def find(summary, *words):
    """The first number in cli-bench's JSON whose key holds all `words` (case-insensitive)."""
    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                found = walk(item, path + key.lower() + ".")
                if found is not None:
                    return found
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if all(word in path for word in words):
                return value
        return None
    return walk(summary, "") if summary else None

rows = [
    rate_row("publish, 1 connection", "publishEventsPerSecond", "publish", 150_000),
    rate_row(f"publish, {main['connections']} connections (extra)", "publishParallelEventsPerSecond",
             "publishParallel", None),
    rate_row("replay into decoded events", "replayEventsPerSecond", "replay", 500_000),
    latency_row(f"p99 publish→delivery at {main['latencyRate']:,} ev/s, fsync {main['serverFsync']}", main, 2),
    latency_row(f"p99 publish→delivery at {main['latencyRate']:,} ev/s, `--fsync interval:100`", interval, 0.5),
]
disk = main.get("diskBytesPerEvent")
corpus = "realistic corpus" if main["corpus"] == "generated, realistic" else main["corpus"]
if disk is None:
    rows.append([f"disk bytes per event ({corpus})", "not run", "≤ 0.26 × the event's JSON size", "—"])
else:
    share = main["diskBytesPerJSONByte"]
    rows.append([f"disk bytes per event ({corpus})",
                 f"{disk:,} B = {share:.3f} × {main['averageEventJSONBytes']:,} B JSON "
                 f"({samples(main['samples']['diskBytesPerEvent'], events_per_second)})",
                 "≤ 0.26 × the event's JSON size", "yes" if share <= 0.26 else "no"])
rss = main.get("serverPeakRSSMiB")
rows.append(["broker peak RSS", "n/a" if rss is None else f"{rss:.1f} MiB", "≤ 64 MiB",
             "—" if rss is None else ("yes" if rss <= 64 else "no")])
if cli is None:
    status = cli_status if cli_status != "measured" else "not measured (no JSON line from Scripts/cli-bench.sh)"
    rows.append(["`telex-pub FILE` (2.4 KB CloudEvents)", status, "≥ 50,000 ev/s, ≤ 64 MB RSS", "—"])
    rows.append(["`telex-sub PATTERN --no-follow > FILE`", status, "≥ 100,000 ev/s", "—"])
else:
    # cli-bench.sh's keys (p13-cli): pub_events_per_s, pub_peak_rss_mib, sub_events_per_s, each with _samples.
    pub_rate = cli.get("pub_events_per_s", find(cli, "pub", "per_s"))
    pub_rss = cli.get("pub_peak_rss_mib", find(cli, "pub", "rss"))
    sub_rate = cli.get("sub_events_per_s", find(cli, "sub", "per_s"))
    def cli_samples(key, format):
        values = cli.get(key + "_samples")
        return f" ({samples(values, format)})" if values else ""
    rows.append(["`telex-pub FILE` (2.4 KB CloudEvents)",
                 f"{pub_rate:,.0f} ev/s{cli_samples('pub_events_per_s', events_per_second)}, "
                 f"{pub_rss:.1f} MiB RSS{cli_samples('pub_peak_rss_mib', lambda v: f'{v:.1f}')}"
                 if pub_rate is not None and pub_rss is not None else json.dumps(cli),
                 "≥ 50,000 ev/s, ≤ 64 MB RSS",
                 "—" if pub_rate is None or pub_rss is None else ("yes" if pub_rate >= 50_000 and pub_rss <= 64 else "no")])
    rows.append(["`telex-sub PATTERN --no-follow > FILE`",
                 f"{sub_rate:,.0f} ev/s{cli_samples('sub_events_per_s', events_per_second)}"
                 if sub_rate is not None else json.dumps(cli),
                 "≥ 100,000 ev/s", "—" if sub_rate is None else ("yes" if sub_rate >= 100_000 else "no")])

print()
print(f"Telex benchmark (issue 13 targets): {main['events']:,} events of ~{main['averageEventJSONBytes']:,} B JSON "
      f"({main['corpus']}"
      + (f", {main['corpusDistinctEvents']:,} distinct, cycled" if main['corpusDistinctEvents'] < main['events'] else "")
      + f", {main['corpusCompressionRatio']:.2f}:1 at level {main['zlibLevel']} in {main['batch']}-event "
      f"batches), codec {main['codec']}, {main['eventsInFlight']} events in flight; medians of {main['runs']}")
print(f"floors: fdatasync p50 {main['floorFdatasyncP50Ms']:.3f} ms, p99 {main['floorFdatasyncP99Ms']:.3f} ms; "
      f"{main['floorCodec']} level {main['zlibLevel']} one core: compress {main['floorCompressMBPerSecond']:.0f} MB/s, "
      f"inflate {main['floorInflateMBPerSecond']:.0f} MB/s; PING p50 {main['pingP50Ms']:.3f} ms; "
      "latencies from each event's intended send time")
print()
print("| workload | result (median, samples) | target | met? |")
print("|---|---|---|---|")
for row in rows:
    print("| " + " | ".join(row) + " |")
print()
print(json.dumps({**main, "interval100": interval, "cli": cli, "cliStatus": cli_status,
                  "met": {row[0]: row[3] for row in rows if row[3] != "—"}}, ensure_ascii=False))
EOF
