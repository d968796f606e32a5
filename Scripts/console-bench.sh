#!/usr/bin/env bash
# The web console's costs, by hand (not in CI): 20,000 events of ~3 KB in news.world (500 articles × 40 versions),
# then the median of 7 requests for each JSON endpoint, the live tail's rate from offset 0 through every event, and
# telexd's memory while 64 slow browsers (curl at 2 KB/s) tail the topic. Debug build unless TELEX_BENCH_RELEASE=1.
set -euo pipefail
cd "$(dirname "$0")/.."

config=debug
[ "${TELEX_BENCH_RELEASE:-0}" = 1 ] && config=release
swift build -c "$config" --product telexd
swift build -c "$config" --product telex-pub
bin=$(swift build -c "$config" --show-bin-path)
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
console_port=$(free_port)
"$bin/telexd" --port "$port" --data-dir "$work/data" --console-address "127.0.0.1:$console_port" >"$work/telexd.log" 2>&1 &
pid=$!
cleanup() {
    pkill -P $$ curl 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$console_port") 2>/dev/null && break; sleep 0.1; done

python3 - "$work/events.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as out:
    for i in range(20000):
        out.write(json.dumps({"specversion": "1.0", "id": f"e{i}", "source": "urn:telex:bench", "type": "article.updated",
            "topic": "news.world", "data": {"uri": f"urn:telex:bench:{i % 500}", "type": "text",
            "headlines": [{"role": "main", "value": f"Story {i}"}],
            "bodies": [{"role": "main", "contentType": "text/plain", "value": ("Word%d " % i) * 300}]}}) + "\n")
PY
TELEX_SERVER="127.0.0.1:$port" "$bin/telex-pub" --quiet "$work/events.jsonl"

python3 - "http://127.0.0.1:$console_port" <<'PY'
import statistics, subprocess, sys, time
base = sys.argv[1]
for path in ["/api/topics", "/api/overview", "/api/topics/news.world/events",
             "/api/topics/news.world/events?limit=500&from=0", "/api/topics/news.world/events?uri=urn:telex:bench:7",
             "/api/articles?uri=urn:telex:bench:7"]:
    samples, size = [], 0
    for _ in range(7):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", base + path],
                             capture_output=True, text=True, check=True).stdout.split()
        samples.append(float(out[0]) * 1000)
        size = int(out[1])
    print(f"console-bench: {path}: median {statistics.median(samples):.1f} ms "
          f"(samples {', '.join(f'{s:.1f}' for s in sorted(samples))}), {size} bytes")
start = time.time()
tail = subprocess.Popen(["curl", "-s", "-N", base + "/api/topics/news.world/tail?from=0"], stdout=subprocess.PIPE, text=True)
count = 0
for line in tail.stdout:
    if line.startswith("id: "):
        count += 1
        if count == 20000:
            break
elapsed = time.time() - start
tail.kill()
print(f"console-bench: live tail from offset 0: 20000 events in {elapsed:.2f} s = {20000 / elapsed:.0f} events/s")
PY

rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$pid/status"; }
before=$(rss)
for _ in $(seq 1 64); do
    curl -s -N --limit-rate 2k -o /dev/null "http://127.0.0.1:$console_port/api/topics/news.world/tail?from=0" &
done
sleep 20
tails=$(ss -tn state established "( sport = :$console_port )" | tail -n +2 | wc -l)
echo "console-bench: 64 slow tails asked, $tails connections open: telexd RSS ${before} MiB before, $(rss) MiB after 20 s"
