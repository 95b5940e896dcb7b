#!/usr/bin/env bash
# Replication across processes: three gatestream processes on loopback (node-a primary,
# node-b and node-c replicas) replicating over the grpc or the tcp transport with mutual TLS
# (fresh certificates from the example cluster's make-certs.sh), synchronous=NORMAL.
#  1. wrk (2 threads, 64 connections, 10 s) posts single-row INSERTs with bound params to
#     node-a with "writeConcern":{"level":"majority"}, then the same with level local;
#     requests/s, mean latency and the count of non-200 answers (must be 0), then a check that
#     both replicas hold every row of the primary.
#  2. replica lag: bench/ws/ws_bench --latency inserts 2,000 rows/s for 20 s on node-a over a
#     WebSocket while a subscriber on node-b receives the changes; ack-to-change is the time
#     from the primary's acknowledgement to the replica's change event; every row must
#     arrive exactly once.
# Usage: bench/cluster/run.sh [grpc|tcp] [build dir]   (default: grpc, build; use a
#        RelWithDebInfo build with GS_BENCH on). Needs wrk, openssl, curl, python3 and
#        /usr/bin/time.
# Environment: SECONDS_WRK (10), CONNECTIONS (64), LAG_RATE (2000), LAG_SECONDS (20),
#   PERF_DIR=D records `perf record --call-graph dwarf` of node-a and node-b during the
#   majority run into D (D/<transport>-node-a.data, read with perf report -i).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
transport=${1:-grpc}
build=$(cd "${2:-$root/build}" && pwd)
bin=$build/gatestream
tool=$build/bench/ws/ws_bench
secs=${SECONDS_WRK:-10}
conns=${CONNECTIONS:-64}
lag_rate=${LAG_RATE:-2000}
lag_secs=${LAG_SECONDS:-20}
case $transport in
grpc | tcp) ;;
*) echo "usage: $0 [grpc|tcp] [build dir]" >&2; exit 2 ;;
esac
command -v wrk >/dev/null || { echo "wrk is not installed: apt-get install wrk" >&2; exit 1; }
[ -x "$bin" ] || { echo "no $bin: build the tree first" >&2; exit 1; }
[ -x "$tool" ] || { echo "no $tool: configure with -DGS_BENCH=ON and build" >&2; exit 1; }
[ -f "$build/plugins/gs_transport_$transport.so" ] ||
    { echo "no $build/plugins/gs_transport_$transport.so: build that transport" >&2; exit 1; }

tmp=$(mktemp -d /tmp/gs-cluster-bench.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

sh "$root/config/cluster/static-$transport/make-certs.sh" "$tmp/certs" >/dev/null
repl_port=$(free_port)
declare -A http
for n in node-a node-b node-c; do http[$n]=$(free_port); done

# One node's YAML: HTTP + WebSocket clients, the transport with mutual TLS, database main.
config() {
    local id=$1 role=$2 listen tpeers rpeers
    if [ "$role" = primary ]; then
        listen=$repl_port
        tpeers=""
        rpeers="[{ id: node-b, role: replica }, { id: node-c, role: replica }]"
    else
        # grpc: -1 = a replica does not listen; tcp: 0 = an OS-assigned port
        if [ "$transport" = grpc ]; then listen=-1; else listen=0; fi
        tpeers="      peers: [{ id: node-a, address: 127.0.0.1:$repl_port }]"
        rpeers="[{ id: node-a, role: primary }]"
    fi
    cat > "$tmp/$id.yaml" <<YAML
node: { id: $id, data_dir: $tmp/$id }
log: { level: warn }
plugins:
  - { name: http, kind: client_transport }
  - { name: ws, kind: client_transport }
  - name: repl
    kind: repl_transport
    plugin: $transport
    config:
      host: 127.0.0.1
      port: $listen
      tls_cert: $tmp/certs/$id.pem
      tls_key: $tmp/certs/$id.key
      tls_ca_cert: $tmp/certs/ca.pem
$tpeers
server:
  { host: 127.0.0.1, port: ${http[$id]}, accept_sql: true, access_log: false, io_threads: 2 }
databases:
  - { id: main, path: main.db, synchronous: normal, read_pool_size: 2 }
replication:
  role: $role
  transport: repl
  peers: $rpeers
YAML
}
config node-a primary
config node-b replica
config node-c replica

declare -A pid
for n in node-a node-b node-c; do
    GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/$n.yaml" > "$tmp/$n.log" 2>&1 &
    pid[$n]=$!
    pids+=($!)
done
url() { echo "http://127.0.0.1:${http[$1]}"; }
fail() {
    echo "run.sh: $*" >&2
    for n in node-a node-b node-c; do
        echo "--- $n.log (tail)" >&2
        tail -n 20 "$tmp/$n.log" >&2
    done
    exit 1
}
# Bounded wait (30 s) until `GET /health/ready` of node $1 satisfies the python test $2 on
# its replication object r.
wait_ready() {
    local i
    for i in $(seq 300); do
        if curl -s "$(url "$1")/health/ready" | python3 -c "import json,sys
r = json.load(sys.stdin).get('replication') or {}
sys.exit(0 if ($2) else 1)" 2>/dev/null; then return 0; fi
        kill -0 "${pid[$1]}" 2>/dev/null || fail "$1 exited"
        sleep 0.1
    done
    fail "$1: not ready after 30 s: $(curl -s "$(url "$1")/health/ready")"
}
wait_ready node-b "r.get('syncState') == 'ready'"
wait_ready node-c "r.get('syncState') == 'ready'"
wait_ready node-a "r.get('peers') == 2"
echo "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) before the run"
echo "== $transport, mutual TLS: node-a $(url node-a) (primary), node-b $(url node-b) and" \
    "node-c $(url node-c) (replicas) ready"

post() { curl -sf "$(url "$1")$2" -H 'Content-Type: application/json' -d "$3"; }
ddl="CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
ddl="$ddl age INTEGER NOT NULL)"
post node-a /db/main/execute "{\"sql\":\"$ddl\",\"writeConcern\":{\"level\":\"all\"}}" >/dev/null ||
    fail "CREATE TABLE with writeConcern all failed"
count() {
    post "$1" /db/main/query '{"sql":"SELECT count(*) AS n FROM bench_rows"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'
}
cpu() { awk '{print $14 + $15}' "/proc/${pid[$1]}/stat"; }   # utime + stime, clock ticks
# Whole machine, clock ticks: busy (user, nice, system, irq, softirq, steal) and softirq alone.
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9; exit}' /proc/stat; }
softirq() { awk '/^cpu / {print $8; exit}' /proc/stat; }
hz=$(getconf CLK_TCK)
# cpu_report SECONDS CLIENT WRITES TICKS_A TICKS_B TICKS_C CLIENT_SECONDS MACHINE_TICKS
# SOFTIRQ_TICKS: where the CPU went during a run. Interrupt time (softirq: mostly the loopback
# TCP of the nodes and the client) is charged to no process; the rest is what other processes
# on the machine used (an estimate: the two clocks differ by a few ticks, so ~0 shows as 0).
cpu_report() {
    awk -v secs="$1" -v client="$2" -v n="$3" -v a="$4" -v b="$5" -v c="$6" -v w="$7" \
        -v m="$8" -v si="$9" -v hz="$hz" -v cores="$(nproc)" 'BEGIN {
        if (n < 1) n = 1
        printf "CPU (of %d cores x %d s): node-a %.2f s, node-b %.2f s, node-c %.2f s, %s %.2f s,",
            cores, secs, a / hz, b / hz, c / hz, client, w
        other = (m - a - b - c - si) / hz - w
        if (other < 0)
            other = 0
        printf " interrupts %.2f s, other processes %.2f s;", si / hz, other
        printf " per answered write: node-a %.0f us, node-b %.0f us, node-c %.0f us\n",
            a / hz * 1e6 / n, b / hz * 1e6 / n, c / hz * 1e6 / n }'
}

# wrk for $secs s with write concern $1 (ids of run $2): its report, where the CPU went, and a
# check that every answer was 200.
run_wrk() {
    local level=$1 run=$2 out="$tmp/wrk-$1.txt" n a0 b0 c0 m0 s0 perfpids=()
    echo "== single-row INSERT, writeConcern $level: wrk -t2 -c$conns -d${secs}s (node-a) =="
    if [ -n "${PERF_DIR:-}" ] && [ "$level" = majority ]; then
        mkdir -p "$PERF_DIR"
        for n in node-a node-b; do
            perf record --call-graph dwarf,16384 -F 199 -p "${pid[$n]}" \
                -o "$PERF_DIR/$transport-$n.data" -- sleep "$secs" > "$tmp/perf-$n.log" 2>&1 &
            perfpids+=($!)
        done
    fi
    a0=$(cpu node-a); b0=$(cpu node-b); c0=$(cpu node-c); m0=$(busy); s0=$(softirq)
    LEVEL=$level RUN=$run /usr/bin/time -f '%U %S' -o "$tmp/wrk-$level.time" \
        wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$here/insert.lua" "$(url node-a)" \
        > "$out" 2> "$tmp/wrk-$level.err" || fail "wrk failed: $(cat "$tmp/wrk-$level.err")"
    cpu_report "$secs" wrk "$(sed -n 's/^200 answers: //p' "$out")" $(( $(cpu node-a) - a0 )) \
        $(( $(cpu node-b) - b0 )) $(( $(cpu node-c) - c0 )) \
        "$(awk '{print $1 + $2}' "$tmp/wrk-$level.time")" $(( $(busy) - m0 )) \
        $(( $(softirq) - s0 )) > "$tmp/cpu.txt"
    for p in "${perfpids[@]}"; do wait "$p" || true; done
    grep -E 'Latency  |50%|99%|Requests/sec|requests in|answers|Socket errors|Non-2xx' "$out"
    cat "$tmp/cpu.txt"
    n=$(sed -n 's/^non-200 answers: //p' "$out")
    [ "$n" = 0 ] || fail "$n answers were not 200 (first ones: $(head -3 "$tmp/wrk-$level.err"))"
    if grep -q 'Socket errors' "$out"; then fail "wrk saw socket errors"; fi
}
# Every row of the primary reaches both replicas: the three counts agree (bounded wait, 30 s;
# node-a may still commit requests wrk left in flight when it stopped).
check_converged() {
    local a b c i
    for i in $(seq 300); do
        a=$(count node-a)
        b=$(count node-b)
        c=$(count node-c)
        [ "$a" = "$b" ] && [ "$a" = "$c" ] && break
        sleep 0.1
    done
    [ "$a" = "$b" ] && [ "$a" = "$c" ] ||
        fail "bench_rows did not converge in 30 s: node-a $a rows, node-b $b, node-c $c"
    echo "replicas converged: node-a, node-b and node-c each hold $a rows"
}
run_wrk majority 1
check_converged
run_wrk local 2
check_converged

echo "== replica lag: $lag_rate inserts/s for $lag_secs s on node-a (WebSocket)," \
    "subscriber on node-b =="
a0=$(cpu node-a); b0=$(cpu node-b); c0=$(cpu node-c); m0=$(busy); s0=$(softirq)
/usr/bin/time -f '%U %S' -o "$tmp/lag.time" "$tool" --latency --port "${http[node-a]}" \
    --sub-port "${http[node-b]}" --rate "$lag_rate" --seconds "$lag_secs" ||
    fail "ws_bench --latency failed"
cpu_report "$lag_secs" ws_bench $(( lag_rate * lag_secs )) $(( $(cpu node-a) - a0 )) \
    $(( $(cpu node-b) - b0 )) $(( $(cpu node-c) - c0 )) "$(awk '{print $1 + $2}' "$tmp/lag.time")" \
    $(( $(busy) - m0 )) $(( $(softirq) - s0 )) | sed 's/answered write/write/'
for n in node-a node-b node-c; do
    kill -0 "${pid[$n]}" 2>/dev/null || fail "$n exited during the run"
    echo "$n RSS: $(awk '/VmRSS/ {print $2 " kB"}' "/proc/${pid[$n]}/status")"
done
