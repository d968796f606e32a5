#!/usr/bin/env bash
# End to end with a real Prometheus (Debian's `prometheus` package): starts telexd with --metrics-address, a
# Prometheus scraping it every second, publishes to two topics, consumes part of one with a durable consumer and
# commits, then asks Prometheus's HTTP API for telex_consumer_lag and checks it equals the `lag` that
# `telex-admin consumers --json` prints for the same consumer and topic. Exits non-zero on any difference.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v prometheus >/dev/null || { echo "prometheus-lag: prometheus is not installed (apt-get install prometheus)" >&2; exit 1; }
swift build >/dev/null
bin=$(swift build --show-bin-path)
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=$(free_port)
metrics_port=$(free_port)
prometheus_port=$(free_port)
server="127.0.0.1:$port"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "prometheus-lag: $*" >&2
    tail -20 "$work/telexd.log" "$work/prometheus.log" 2>/dev/null >&2 || true
    exit 1
}
wait_for_port() {
    for _ in $(seq 1 150); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    fail "nothing listens on port $1"
}

"$bin/telexd" --port "$port" --data-dir "$work/data" --metrics-address "127.0.0.1:$metrics_port" \
    >"$work/telexd.log" 2>&1 &
pids+=($!)
wait_for_port "$port"
wait_for_port "$metrics_port"

cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: telex
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
wait_for_port "$prometheus_port"

# 30 events to news.world, 5 to news.sport; the indexer reads and commits 12 of news.world.
python3 - "$work" <<'EOF'
import json, sys
work = sys.argv[1]
def event(i, topic):
    return json.dumps({"specversion": "1.0", "id": f"e{topic}{i}", "source": "urn:telex:lag", "type": "article.created",
                       "time": "2026-11-29T10:00:00Z", "datacontenttype": "application/json", "topic": topic,
                       "data": {"uri": f"urn:telex:lag:{topic}:{i}", "headlines": [], "bodies": []}})
with open(f"{work}/events.jsonl", "w") as f:
    for i in range(30): f.write(event(i, "news.world") + "\n")
    for i in range(5): f.write(event(i, "news.sport") + "\n")
EOF
"$bin/telex-pub" --server "$server" --quiet "$work/events.jsonl" >/dev/null
"$bin/telex-sub" --server "$server" news.world --from beginning --consumer indexer --limit 12 --commit-every 12 \
    >/dev/null

admin_lag=$("$bin/telex-admin" consumers indexer --json --server "$server" \
    | python3 -c 'import json, sys
for line in sys.stdin:
    row = json.loads(line)
    if row["topic"] == "news.world": print(row["lag"])')
[ "$admin_lag" = "18" ] || fail "telex-admin reports lag '$admin_lag' for indexer on news.world, expected 18"

query='telex_consumer_lag{consumer="indexer",topic="news.world"}'
prometheus_lag=""
for _ in $(seq 1 60); do
    prometheus_lag=$(curl -s --get "http://127.0.0.1:$prometheus_port/api/v1/query" --data-urlencode "query=$query" \
        | python3 -c 'import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(result[0]["value"][1] if result else "")' || true)
    [ "$prometheus_lag" = "$admin_lag" ] && break
    sleep 1
done
[ "$prometheus_lag" = "$admin_lag" ] || fail "Prometheus has lag '$prometheus_lag', telex-admin says '$admin_lag'"
echo "prometheus-lag: telex_consumer_lag{consumer=\"indexer\",topic=\"news.world\"} = $prometheus_lag in Prometheus, = telex-admin consumers --json lag"
echo "prometheus-lag: OK"
