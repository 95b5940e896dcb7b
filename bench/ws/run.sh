#!/usr/bin/env bash
# WebSocket benchmark of one gatestream node on loopback, with bench/ws/ws_bench:
#  1. point selects over ONE WebSocket with 64 requests in flight (100,000 rows loaded);
#  2. change-feed latency: a subscriber on bench_events while 1,000 single-row writes/s run
#     over another WebSocket (synchronous=NORMAL), for 20 s.
# Usage: bench/ws/run.sh [build dir]   (default: build; use a RelWithDebInfo build).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
bin=$build/gatestream
tool=$build/bench/ws/ws_bench
[ -x "$tool" ] || { echo "no $tool: configure with -DGS_BENCH=ON and build"; exit 1; }
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$tmp/bench.yaml" <<YAML
node: { id: bench, data_dir: $tmp/data }
log: { level: warn }
plugins:
  - { name: http, kind: client_transport }
  - { name: ws, kind: client_transport }
server: { host: 127.0.0.1, port: $port, accept_sql: true, access_log: false, io_threads: 2 }
databases:
  - { id: main, path: main.db, synchronous: normal, read_pool_size: 2 }
YAML
GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/bench.yaml" > "$tmp/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$pid/status; }
echo "== point select over one WebSocket, 64 in flight, 10 s =="
"$tool" --select --port "$port" --inflight 64 --seconds 10 --rows 100000
echo "RSS after the select run: $(rss)"
echo "== change-feed latency: subscriber + 1,000 writes/s for 20 s =="
"$tool" --latency --port "$port" --rate 1000 --seconds 20
echo "RSS after the latency run: $(rss)"
