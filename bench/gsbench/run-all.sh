#!/usr/bin/env bash
# The one command behind the README's client benchmark table: every target (gatestream over
# WebSocket and over HTTP, PostgreSQL, in-process SQLite) x every workload x both durability
# levels, each a rate sweep to its operating point, with the same rows and the same load
# generator. Starts and stops its own gatestream nodes (run.sh) and PostgreSQL (pg.sh).
#
# Usage: bench/gsbench/run-all.sh [--build DIR] [--out DIR]
#   --build DIR  a RelWithDebInfo build with GS_BENCH on (default: build, as `make build`)
#   --out DIR    results (default: gsbench-results): report.md, steps.csv, points.csv,
#                chart-full.svg, chart-relaxed.svg, machine.md, log.txt. A previous run's
#                files are moved into DIR/previous-<time>/.
# Environment (the knobs; defaults take about 30 minutes on a 2-core machine):
#   ROWS=100000      rows per table, loaded identically into every engine
#   DURATION=1       measured seconds per run    (longer runs: DURATION=10 WARMUP=3)
#   WARMUP=0.5       unmeasured seconds before each measurement
#   REPEAT=3         runs per rate; a rate is held when most runs hold it (this machine is
#                    shared: one run can catch another process's burst)
#   BISECT=1         refinement steps between the last rate held and the first missed
#   WORKLOADS="point-select insert update ycsb-a ycsb-b ycsb-c ycsb-f tpcc"
#   TARGETS="sqlite postgres gatestream-ws gatestream-http"
#   DURABILITIES="full relaxed"
#   FULL_CONNECTION_SWEEP=1  choose PostgreSQL's connection count (1..64) and the gatestream
#                    clients' (HTTP pool 8..64, WebSockets 1..2) by a whole sweep at each
#                    count instead of a 1 s capacity probe at each (several times slower)
#   PERF=1           record `perf record -g --call-graph dwarf` of the gatestream node during
#                    the gatestream-ws point-select sweep at full durability (OUT/perf-*.data)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$root/build
out=$root/gsbench-results

# One benchmark invocation; a failure is logged and counted, and the run goes on.
one() {
    "$bench" "$@" || {
        echo "run-all.sh: FAILED (exit $?): gatestream-bench $*"
        echo "$*" >> "$out/failures.txt"
    }
}

# The internal entry point, run inside pg.sh and run.sh (they export GS_PG_URL, GS_URL and
# GS_NODE_PID): one durability level, every workload, and for each workload every target one
# after the other, so the targets compared on a row ran minutes apart, not half an hour.
if [ "${1:-}" = __inner ]; then
    build=$2 out=$3 dur=$4
    bench=$build/bench/gsbench/gatestream-bench
    common=(--rows "$ROWS" --sweep --duration "$DURATION" --warmup "$WARMUP" --bisect "$BISECT"
        --repeat "$REPEAT" --durability "$dur" --out "$out")
    [ "${FULL_CONNECTION_SWEEP:-0}" = 1 ] && common+=(--full-connection-sweep)
    perf_pid=
    for w in $WORKLOADS; do
        for t in $TARGETS; do
            case $t in
            sqlite) one --target sqlite --workload "$w" "${common[@]}" ;;
            postgres) one --target postgres --url "$GS_PG_URL" --workload "$w" "${common[@]}" ;;
            gatestream-ws | gatestream-http)
                if [ "${PERF:-0}" = 1 ] && [ "$t" = gatestream-ws ] && [ "$w" = point-select ] &&
                    [ "$dur" = full ] && [ -n "${GS_NODE_PID:-}" ]; then
                    perf record -g --call-graph dwarf,16384 -F 199 -p "$GS_NODE_PID" \
                        -o "$out/perf-$t-$w-$dur.data" > "$out/perf.log" 2>&1 &
                    perf_pid=$!
                fi
                one --target "$t" --url "$GS_URL" --workload "$w" "${common[@]}"
                if [ -n "$perf_pid" ]; then
                    kill -INT "$perf_pid" 2>/dev/null || true
                    wait "$perf_pid" 2>/dev/null || true
                    perf_pid=
                fi
                ;;
            *) echo "run-all.sh: unknown target $t" ;;
            esac
        done
    done
    exit 0
fi

while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h | --help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run-all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
export ROWS=${ROWS:-100000} DURATION=${DURATION:-1} WARMUP=${WARMUP:-0.5} BISECT=${BISECT:-1}
export REPEAT=${REPEAT:-3}
export WORKLOADS=${WORKLOADS:-"point-select insert update ycsb-a ycsb-b ycsb-c ycsb-f tpcc"}
export DURABILITIES=${DURABILITIES:-"full relaxed"}
export TARGETS=${TARGETS:-"sqlite postgres gatestream-ws gatestream-http"}
bench=$build/bench/gsbench/gatestream-bench
[ -x "$bench" ] || { echo "run-all.sh: no $bench: make build (GS_BENCH is on by default)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
if [ -e "$out/steps.csv" ] || [ -e "$out/points.csv" ]; then
    prev=$out/previous-$(date -u +%Y%m%dT%H%M%SZ)
    mkdir -p "$prev"
    for f in steps.csv points.csv report.md chart-full.svg chart-relaxed.svg machine.md \
        log.txt failures.txt replication.md replication.csv; do
        [ -e "$out/$f" ] && mv "$out/$f" "$prev/"
    done
    echo "run-all.sh: the previous results moved to $prev" >&2
fi
log=$out/log.txt

machine() {
    echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$root" diff --quiet 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) logical cores" \
        "($(lscpu | sed -n 's/^Hypervisor vendor: *//p' | head -1) guest)"
    echo "- Memory: $(free -g | awk '/^Mem:/ {print $2}') GiB; swap $(free -g | awk '/^Swap:/ {print $2}') GiB"
    echo "- Disk (data directories in /tmp): $(df -hT /tmp | awk 'NR == 2 {print $1 ", " $2 ", " $3 " total"}');" \
        "rotational: $(lsblk -dno ROTA "$(df /tmp | awk 'NR == 2 {print $1}')" 2>/dev/null | tr -d ' ' || echo '?');" \
        "$(python3 - <<'PY'
import os, tempfile, time
fd, path = tempfile.mkstemp(dir="/tmp")
ts = []
for _ in range(200):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter()
    os.fdatasync(fd)
    ts.append((time.perf_counter() - t) * 1e3)
os.close(fd)
os.unlink(path)
ts.sort()
print("4 KiB write + fdatasync: p50 %.2f ms, p99 %.2f ms" % (ts[100], ts[197]))
PY
)"
    echo "- Kernel: $(uname -r)"
    echo "- Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- SQLite $(sqlite3 --version 2>/dev/null | cut -d' ' -f1), $(/usr/lib/postgresql/15/bin/postgres --version 2>/dev/null)"
    echo "- Settings: ROWS=$ROWS DURATION=$DURATION WARMUP=$WARMUP REPEAT=$REPEAT BISECT=$BISECT"
}
machine > "$out/machine.md"
start=$(date +%s)
# The generator's own ceiling and floor: a null target answers every request at once.
"$bench" --target null --workload point-select --rows "$ROWS" --sweep --duration "$DURATION" \
    --warmup "$WARMUP" --bisect 0 --max-rate 1024000 --out "$out/null" > "$out/null.txt" 2>&1 ||
    true
"$bench" --target null --workload point-select --rows "$ROWS" --rate 1000 \
    --duration "$DURATION" --warmup "$WARMUP" --out "$out/null" >> "$out/null.txt" 2>&1 || true
{
    echo "- Load generator alone (null target, every request answered at once): holds" \
        "$(sed -n 's/^operating point: null point-select full: //p' "$out/null.txt" | head -1);" \
        "at 1,000/s its own latency is $(awk -F, '$5 == "fixed" {printf "p50 %s ms, p99 %s ms, max %s ms", $10, $12, $14}' "$out/null/steps.csv")" \
        "(scheduling delay on this machine: the floor of every figure)"
} >> "$out/machine.md"
rm -rf "$out/null" "$out/null.txt"
cat "$out/machine.md"
{
    has_pg=0 has_gs=0
    for t in $TARGETS; do
        case $t in
        postgres) has_pg=1 ;;
        gatestream-ws | gatestream-http) has_gs=1 ;;
        esac
    done
    for d in $DURABILITIES; do
        cmd=("$0" __inner "$build" "$out" "$d")
        [ $has_gs = 1 ] && cmd=("$here/run.sh" --build "$build" --durability "$d" -- "${cmd[@]}")
        [ $has_pg = 1 ] && cmd=("$here/pg.sh" "${cmd[@]}")
        "${cmd[@]}" || echo "run-all.sh: the $d pass ended with an error"
    done
} 2>&1 | tee "$log"
echo "- Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); the run took" \
    "$(( ($(date +%s) - start) / 60 )) min" >> "$out/machine.md"
"$bench" --report "$out"
echo "run-all.sh: $out/report.md, $out/chart-full.svg, $out/chart-relaxed.svg" >&2
if [ -s "$out/failures.txt" ]; then
    echo "run-all.sh: $(wc -l < "$out/failures.txt") invocations failed (see $out/failures.txt" \
        "and $log)" >&2
    exit 1
fi
