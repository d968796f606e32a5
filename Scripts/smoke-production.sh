#!/usr/bin/env bash
# Production smoke test, the README's "Running in production" steps end to end: a CA and a server certificate
# made with openssl, principals in a users file, telexd with TLS and the users file; then checks that TLS 1.3 is
# negotiated, a desk's token publishes where it may and is refused (topic named, non-zero exit) where it may not,
# a client without a token is refused, a principal cannot use another's consumer name, a plaintext client gets
# a clear error, telexd refuses to listen beyond loopback in plaintext, and /metrics over HTTPS shows the
# published count and a consumer lag equal to end − committed.
set -euo pipefail
cd "$(dirname "$0")/.."

swift build
bin=$(swift build --show-bin-path)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server="127.0.0.1:$port"
metrics_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    echo "smoke-production: $*" >&2
    [ -f "$work/telexd.log" ] && tail -20 "$work/telexd.log" >&2
    exit 1
}

# Secure by default: plaintext beyond loopback is refused with a one-line fix.
if "$bin/telexd" --host 0.0.0.0 --port 0 --data-dir "$work/refused" 2>"$work/refusal.txt"; then
    fail "telexd listened on 0.0.0.0 in plaintext"
fi
grep -q -- "--allow-plaintext" "$work/refusal.txt" || fail "the plaintext refusal does not say how to fix it"
echo "smoke-production: plaintext on 0.0.0.0 refused: $(head -1 "$work/refusal.txt")"

# A CA, and a server certificate for localhost and 127.0.0.1 signed by it.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 \
    -subj "/CN=Telex smoke CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
    -subj "/CN=localhost" 2>/dev/null
printf "subjectAltName=DNS:localhost,IP:127.0.0.1\n" >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
    -extfile server.ext 2>/dev/null
cd - >/dev/null

sports=$("$bin/telexd" users add sports-desk --file "$work/users.json" --publish 'news.sport.>' \
    --subscribe 'news.sport.>' --consumers 'sports-*')
push=$("$bin/telexd" users add push-alerts --file "$work/users.json" --subscribe 'news.>' --consumers 'push-*')

"$bin/telexd" --port "$port" --data-dir "$work/data" --tls-cert "$work/server.pem" --tls-key "$work/server.key" \
    --users "$work/users.json" --metrics-address "127.0.0.1:$metrics_port" >>"$work/telexd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    sleep 0.1
done

protocol=$(echo | openssl s_client -connect "$server" -CAfile "$work/ca.pem" -servername localhost 2>/dev/null \
    | grep -o "TLSv1\.[0-9]" | head -1 || true)
[ "$protocol" = "TLSv1.3" ] || fail "TLS negotiated '$protocol', expected TLSv1.3"
echo "smoke-production: openssl s_client negotiated $protocol"

event() {
    printf '{"specversion":"1.0","id":"%s","source":"urn:telex:smoke","type":"article.created","time":"2026-11-29T10:00:00Z","datacontenttype":"application/json","topic":"%s","data":{"uri":"urn:telex:smoke:%s","headlines":[],"bodies":[]}}\n' "$1" "$2" "$1"
}
event sport-1 news.sport.football >"$work/allowed.jsonl"
event world-1 news.world >"$work/forbidden.jsonl"

"$bin/telex-pub" --server "$server" --tls-ca "$work/ca.pem" --token "$sports" "$work/allowed.jsonl" >/dev/null \
    || fail "the sports desk could not publish to news.sport.football"
echo "smoke-production: sports-desk published to news.sport.football over TLS"

status=0
"$bin/telex-pub" --server "$server" --tls-ca "$work/ca.pem" --token "$sports" "$work/forbidden.jsonl" \
    >/dev/null 2>"$work/forbidden.txt" || status=$?
[ "$status" -ne 0 ] || fail "the sports desk published to news.world"
grep -q "NOT_AUTHORIZED.*news.world" "$work/forbidden.txt" || fail "the refusal does not name news.world"
echo "smoke-production: news.world refused (exit $status): $(head -1 "$work/forbidden.txt")"

status=0
"$bin/telex-sub" --server "$server" --tls-ca "$work/ca.pem" 'news.>' --no-follow >/dev/null 2>"$work/anonymous.txt" \
    || status=$?
[ "$status" -eq 77 ] || fail "a client without a token exited $status, expected 77"
echo "smoke-production: no token refused (exit $status): $(head -1 "$work/anonymous.txt")"

status=0
TELEX_TOKEN="$push" "$bin/telex-sub" --server "$server" --tls-ca "$work/ca.pem" 'news.>' --no-follow \
    --consumer sports-indexer >/dev/null 2>"$work/consumer.txt" || status=$?
[ "$status" -ne 0 ] && grep -q "NOT_AUTHORIZED" "$work/consumer.txt" \
    || fail "push-alerts could use the consumer name sports-indexer"
echo "smoke-production: another principal's consumer refused: $(head -1 "$work/consumer.txt")"

TELEX_TOKEN="$push" "$bin/telex-sub" --server "$server" --tls-ca "$work/ca.pem" 'news.>' --no-follow \
    --consumer push-alerts >"$work/read.jsonl" || fail "push-alerts could not read news.>"
grep -q "news.sport.football" "$work/read.jsonl" || fail "push-alerts did not read the sports event"
echo "smoke-production: push-alerts read news.> with its own consumer"

status=0
"$bin/telex-pub" --server "$server" --token "$sports" "$work/allowed.jsonl" >/dev/null 2>"$work/plaintext.txt" \
    || status=$?
[ "$status" -ne 0 ] && grep -qi "tls" "$work/plaintext.txt" || fail "a plaintext client to the TLS port got no clear error"
echo "smoke-production: plaintext client told: $(head -1 "$work/plaintext.txt")"

# Metrics over HTTPS with the broker's certificate: what was published, and push-alerts' lag (end − committed).
metric() {
    python3 - "$work/ca.pem" "$metrics_port" "$1" <<'PY'
import re, ssl, sys, urllib.request
context = ssl.create_default_context(cafile=sys.argv[1])
with urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[2]}/metrics", context=context) as response:
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4"), response.headers["Content-Type"]
    text = response.read().decode()
for line in text.splitlines():
    if line.startswith(sys.argv[3] + " "):
        print(float(line.split(" ")[1]))
        break
PY
}
published=$(metric 'telex_published_events_total{topic="news.sport.football"}')
[ "$published" = "1.0" ] || fail "telex_published_events_total for news.sport.football is '$published', expected 1"
end=$(metric 'telex_log_end_offset{topic="news.sport.football"}')
lag=$(metric 'telex_consumer_lag{consumer="push-alerts",topic="news.sport.football"}')
committed=$(metric 'telex_consumer_committed_offset{consumer="push-alerts",topic="news.sport.football"}')
[ -n "$lag" ] && python3 -c "assert $lag == $end - $committed" || fail "lag '$lag' is not end '$end' − committed '$committed'"
echo "smoke-production: /metrics over HTTPS: published $published, push-alerts lag $lag (end $end, committed $committed)"

echo "smoke-production: OK"
