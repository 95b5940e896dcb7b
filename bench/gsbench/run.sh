#!/usr/bin/env bash
# Start a throwaway gatestream node on a loopback port, run gatestream-bench (or any command)
# against it, stop the node (also on Ctrl-C or an error).
#
# Usage:
#   bench/gsbench/run.sh [--build DIR] [--durability full|relaxed] [--perf FILE] \
#       -- --target gatestream-ws --workload point-select --rows 100000 --sweep --duration 3
#   bench/gsbench/run.sh [options] -- COMMAND [ARGS...]     (COMMAND sees GS_URL and
#                                                            GS_NODE_PID)
#
# With gatestream-bench arguments (the first word after -- starts with --), the script adds
# --url and --durability itself. The node: HTTP + WebSocket transports, accept_sql, no access
# log, database `main` with synchronous: full (--durability full, the default) or normal
# (relaxed), WAL, READERS reader connections (2) and IO_THREADS I/O threads (2), a 16 MiB
# body limit for the seeding loads. --perf FILE records `perf record -g --call-graph dwarf`
# of the node while the command runs.
# Environment: READERS, IO_THREADS, KEEP=1 (keep the node's temp dir and log).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
durability=full
perf_out=
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --durability) durability=$2; shift 2 ;;
    --perf) perf_out=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $durability in
full) sync=full ;;
relaxed) sync=normal ;;
*) echo "run.sh: --durability must be full or relaxed" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || { echo "run.sh: nothing to run after -- (see --help)" >&2; exit 2; }
bin=$build/gatestream
bench=$build/bench/gsbench/gatestream-bench
[ -x "$bin" ] || { echo "run.sh: no $bin: build the tree first (make build)" >&2; exit 1; }
for p in http ws; do
    [ -f "$build/plugins/gs_transport_$p.so" ] ||
        { echo "run.sh: no $build/plugins/gs_transport_$p.so: build the tree" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/gsbench-node.XXXXXX)
pid=
perf_pid=
cleanup() {
    local rc=$?
    set +e # every step of the cleanup runs, whatever an earlier one returned
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null
        wait "$perf_pid" 2>/dev/null
    fi
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ "${KEEP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ $rc -ne 130 ]; }; then
        echo "run.sh: node files kept in $tmp (log: $tmp/node.log)" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
cat > "$tmp/node.yaml" <<YAML
node: { id: gsbench, data_dir: $tmp/data }
log: { level: warn }
plugins:
  - { name: http, kind: client_transport }
  - { name: ws, kind: client_transport }
server:
  host: 127.0.0.1
  port: $port
  accept_sql: true
  access_log: false
  io_threads: ${IO_THREADS:-2}
  max_body_bytes: 16777216
databases:
  - { id: main, path: main.db, synchronous: $sync, wal: true, read_pool_size: ${READERS:-2} }
YAML
GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/node.yaml" > "$tmp/node.log" 2>&1 &
pid=$!
url=http://127.0.0.1:$port
ready=0
for _ in $(seq 200); do
    if curl -sf "$url/health" > /dev/null 2>&1; then ready=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
done
if [ $ready != 1 ]; then
    echo "run.sh: the node did not answer $url/health within 10 s; its log:" >&2
    tail -n 20 "$tmp/node.log" >&2
    exit 1
fi
echo "run.sh: gatestream node $url (pid $pid, synchronous: $sync, readers ${READERS:-2}," \
    "io_threads ${IO_THREADS:-2})" >&2
if [ -n "$perf_out" ]; then
    perf record -g --call-graph dwarf,16384 -F 499 -p "$pid" -o "$perf_out" \
        > "$tmp/perf.log" 2>&1 &
    perf_pid=$!
fi
export GS_URL=$url GS_NODE_PID=$pid
case $1 in
--*) "$bench" --url "$url" --durability "$durability" "$@" ;;
*) "$@" ;;
esac
