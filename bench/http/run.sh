#!/usr/bin/env bash
# HTTP keep-alive benchmark of one gatestream node on loopback with wrk:
# point selects and single-row inserts (synchronous=NORMAL), plus RSS at idle and under load.
# Usage: bench/http/run.sh [build dir]   (default: build). Needs wrk (apt-get install wrk).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
bin=$build/gatestream
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk"; exit 1; }
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/bench.yaml" <<YAML
node: { id: bench, data_dir: $tmp/data }
log: { level: warn }
plugins:
  - { name: http, kind: client_transport }
server: { host: 127.0.0.1, port: $port, accept_sql: true, access_log: false, io_threads: 2 }
databases:
  - { id: main, path: main.db, synchronous: normal, read_pool_size: 2 }
YAML
GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/bench.yaml" > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
H='Content-Type: application/json'
curl -sf "http://127.0.0.1:$port/db/main/execute" -H "$H" -d '{"sql":"CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL, age INTEGER NOT NULL, bio TEXT)"}' >/dev/null
python3 - "$port" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
for start in range(1, 100001, 5000):
    rows = [[i, "user%d" % i, "user%d@example.com" % i, 18 + i % 62, "Bio for user %d" % i] for i in range(start, start + 5000)]
    req = urllib.request.Request("http://127.0.0.1:%s/db/main/load" % port, json.dumps(
        {"sql": "INSERT INTO users (id, name, email, age, bio) VALUES (?, ?, ?, ?, ?)", "paramsBatch": rows}).encode(),
        {"Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
PY
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status; }
echo "RSS at idle (100,000 rows loaded): $(rss)"
echo "== point select: wrk -t2 -c64 -d10s =="
wrk -t2 -c64 -d10s -s "$here/point_select.lua" "http://127.0.0.1:$port" &
w=$!; sleep 5; echo "RSS under point-select load: $(rss)"; wait $w
echo "== single-row insert (synchronous=NORMAL): wrk -t2 -c64 -d10s =="
wrk -t2 -c64 -d10s -s "$here/insert.lua" "http://127.0.0.1:$port" &
w=$!; sleep 5; echo "RSS under insert load: $(rss)"; wait $w
