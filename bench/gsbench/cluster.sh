#!/usr/bin/env bash
# Replica lag of the three-node example cluster (config/cluster/static-grpc: node-a primary,
# node-b and node-c replicas, gRPC replication with mutual TLS), measured by
# `gatestream-bench --replication`: single-row inserts at a fixed rate on node-a over a
# WebSocket, a WebSocket subscriber on node-b and on node-c timing each row's change event.
#
# The example's YAML files are copied into a temporary directory with free loopback ports,
# fresh certificates from the example's make-certs.sh, the WebSocket transport added (the
# subscribers need it) and log level warn; everything else is the example's own (notably
# synchronous: normal). The nodes are stopped afterwards, also on Ctrl-C or an error.
#
# Usage: bench/gsbench/cluster.sh [--build DIR] [--out DIR]
# Environment: RATE (1000 inserts/s), SECONDS_RUN (10), KEEP=1 (keep the nodes' files).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
out=$root/gsbench-results
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "cluster.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
example=$root/config/cluster/static-grpc
bin=$build/gatestream
bench=$build/bench/gsbench/gatestream-bench
for f in "$bin" "$bench"; do
    [ -x "$f" ] || { echo "cluster.sh: no $f: build the tree first (make build)" >&2; exit 1; }
done
for p in http ws grpc; do
    [ -f "$build/plugins/gs_transport_$p.so" ] ||
        { echo "cluster.sh: no $build/plugins/gs_transport_$p.so: build the tree" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/gsbench-cluster.XXXXXX)
declare -A pid
cleanup() {
    local rc=$? n
    set +e # every step of the cleanup runs, whatever an earlier one returned
    for n in "${!pid[@]}"; do kill "${pid[$n]}" 2>/dev/null || true; done
    for n in "${!pid[@]}"; do wait "${pid[$n]}" 2>/dev/null || true; done
    if [ "${KEEP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ $rc -ne 130 ]; }; then
        echo "cluster.sh: node files kept in $tmp" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

sh "$example/make-certs.sh" "$tmp/certs" > /dev/null
declare -A http
sed_args=(-e "s#config/cluster/static-grpc/certs/#$tmp/certs/#g" -e 's/level: info/level: warn/')
i=1
for n in node-a node-b node-c; do
    http[$n]=$(free_port)
    sed_args+=(-e "s/port: 988$i\b/port: ${http[$n]}/")
    repl=$(free_port)
    sed_args+=(-e "s/\(port: \|127.0.0.1:\)989$i\b/\1$repl/")
    i=$((i + 1))
done
for n in node-a node-b node-c; do
    # The WebSocket transport after the http one (its first `kind: client_transport`).
    sed "${sed_args[@]}" "$example/$n.yaml" |
        awk '{print} /kind: client_transport/ && !done {print "  - name: ws"; print "    kind: client_transport"; done = 1}' \
            > "$tmp/$n.yaml"
    GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/$n.yaml" --data-dir "$tmp/$n" \
        > "$tmp/$n.log" 2>&1 &
    pid[$n]=$!
done
url() { echo "http://127.0.0.1:${http[$1]}"; }
# Bounded wait (30 s) for GET /health/ready of node $1 to satisfy the python test $2 on its
# replication object r.
wait_ready() {
    local _
    for _ in $(seq 300); do
        if curl -s "$(url "$1")/health/ready" | python3 -c "import json, sys
r = json.load(sys.stdin).get('replication') or {}
sys.exit(0 if ($2) else 1)" 2> /dev/null; then return 0; fi
        kill -0 "${pid[$1]}" 2> /dev/null || { tail -n 20 "$tmp/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "cluster.sh: $1 not ready after 30 s: $(curl -s "$(url "$1")/health/ready")" >&2
    exit 1
}
wait_ready node-b "r.get('syncState') == 'ready'"
wait_ready node-c "r.get('syncState') == 'ready'"
wait_ready node-a "r.get('peers') == 2"
echo "cluster.sh: node-a $(url node-a) (primary), node-b $(url node-b), node-c $(url node-c)" \
    "ready; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
mkdir -p "$out"
"$bench" --replication --url "$(url node-a)" --replica-url "$(url node-b)" \
    --replica-url "$(url node-c)" --rate "${RATE:-1000}" --duration "${SECONDS_RUN:-10}" \
    --out "$out"
