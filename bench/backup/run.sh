#!/usr/bin/env bash
# Backup benchmark (issue 4, item 7): a full backup of a large database taken by a real
# gatestream process while it serves an open-loop load of single-row writes over HTTP.
#
#  1. backup_bench create: a ~N MiB database file (rows of 1000 random bytes), written before
#     the server starts and dropped from the page cache (the copy reads it from disk).
#  2. gatestream serves it with a backups section pointing at a filesystem destination
#     (plugin fs) in the temp dir: interval_ms at its maximum (no scheduled turns) and
#     full_copy_interval_ms 0, so every turn is a full copy. The first turn runs when the
#     database opens (timed with no load); the tool waits for it.
#  3. backup_bench run: R writes/s (default 1000), each due at its own time whatever the
#     answers before it (open loop, C keep-alive connections), latency measured from the
#     time the write was due. After a baseline it triggers a turn with POST /db/main/backup
#     and polls GET /db/main/backup until the run is stored; the tail runs a few seconds on.
#  4. The server stops (SIGTERM: the log is captured a last time onto the chain).
#     `gatestream restore --moment <the run's finishedAt>` rebuilds the full copy alone:
#     backup_bench check proves it holds the seed rows, every write acknowledged before the
#     copy started and none sent after it ended. `gatestream restore` to the newest moment
#     (the full copy plus the final capture) must equal the stopped database row for row
#     (backup_bench compare).
#
# Usage: bench/backup/run.sh [--small] [--mb N] [--build DIR] [--rate R] [--conns C]
#                            [--baseline S] [--tail S] [--pages-per-step N]
#                            [--synchronous off|normal|full] [--warm] [--keep]
#   default: 1024 MiB, build dir build (configured RelWithDebInfo when missing, as `make build`),
#   1000 writes/s over 8 connections, 20 s baseline, 5 s tail, pages_per_step 256 (the
#   config default), synchronous normal (config/default.yaml's). --small: 50 MiB.
#   --warm keeps the file in the page cache. --keep leaves the temp dir for inspection.
# Exit status: 0 when the backup finished, no write failed and both restores checked out.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mb=1024 build=$root/build rate=1000 conns=8 baseline=20 tail=5 pps=256 sync=normal
cold=--cold keep=0
while [ $# -gt 0 ]; do
    case $1 in
    --small) mb=50 ;;
    --mb) mb=$2; shift ;;
    --build) build=$2; shift ;;
    --rate) rate=$2; shift ;;
    --conns) conns=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    --tail) tail=$2; shift ;;
    --pages-per-step) pps=$2; shift ;;
    --synchronous) sync=$2; shift ;;
    --warm) cold= ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# ---- build (only the targets this needs) ----
buildlog=$(mktemp /tmp/gs-backup-bench-build.XXXXXX)
if ! { [ -f "$build/CMakeCache.txt" ] ||
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo; } >"$buildlog" 2>&1 ||
    ! cmake --build "$build" -j"$(nproc)" --target gatestream backup_bench gs_transport_http \
        gs_backup_fs >>"$buildlog" 2>&1; then
    tail -30 "$buildlog"; rm -f "$buildlog"; echo "run.sh: the build failed" >&2; exit 1
fi
rm -f "$buildlog"
bin=$build/gatestream
tool=$build/bench/backup/backup_bench

tmp=$(mktemp -d /tmp/gs-backup-bench.XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if [ "$keep" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
mkdir -p "$tmp/data" "$tmp/dest"
now_ms() { date +%s%3N; }

echo "== backup benchmark: ${mb} MiB, ${rate} writes/s, $(nproc) cores, load average" \
    "$(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null ||
    echo '?') =="
seed=$("$tool" create --db "$tmp/data/main.db" --mb "$mb" $cold | sed -n 's/^SEED_ROWS=//p')

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/bench.yaml" <<YAML
node: { id: bench, data_dir: $tmp/data }
log: { level: info }
plugins:
  - { name: http, kind: client_transport }
  - { name: files, plugin: fs, kind: backup_destination, config: { dir: $tmp/dest } }
server: { host: 127.0.0.1, port: $port, accept_sql: true, access_log: false, io_threads: 2 }
databases:
  - id: main
    path: main.db
    synchronous: $sync
    backups:
      destination: files
      interval_ms: 31536000000
      full_copy_interval_ms: 0
      pages_per_step: $pps
YAML
GS_PLUGIN_DIR=$build/plugins "$bin" --config "$tmp/bench.yaml" >"$tmp/server.log" 2>&1 &
pid=$!
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
    sleep 0.1
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "the server did not start"; exit 1; }

status=0
"$tool" run --port "$port" --rate "$rate" --conns "$conns" --baseline "$baseline" \
    --tail "$tail" --server-pid "$pid" --samples "$tmp/samples.txt" --result "$tmp/result.sh" \
    --timeline "$tmp/timeline.txt" || status=1
# shellcheck disable=SC1091
. "$tmp/result.sh"
wal=$(stat -c %s "$tmp/data/main.db-wal" 2>/dev/null || echo 0)
echo "write-ahead log at the end of the load: $((wal / 1048576)) MiB (the cycle alone" \
    "checkpoints it, and it ran no change turn)"

# ---- stop the server (its close captures the log onto the chain), bounded ----
t0=$(now_ms)
kill -TERM "$pid"
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
    echo "the server did not stop within 120 s"; exit 1
fi
wait "$pid" || { echo "the server exited with $?"; status=1; }
pid=
echo "server stopped in $(($(now_ms) - t0)) ms"
if grep -E "WARN|ERROR" "$tmp/server.log" >/dev/null; then
    echo "server log warnings:"; grep -E "WARN|ERROR" "$tmp/server.log" | head -5
fi

if [ "${BACKUP_OK:-0}" = 1 ]; then
    t0=$(now_ms)
    "$bin" restore --from "$tmp/dest" --to "$tmp/restore-copy.db" --moment "$FINISHED_AT" \
        >"$tmp/restore1.txt" || { cat "$tmp/restore1.txt"; status=1; }
    echo "restore of the full copy alone (--moment $FINISHED_AT): $(($(now_ms) - t0)) ms"
    "$tool" check --restored "$tmp/restore-copy.db" --samples "$tmp/samples.txt" \
        --seed-rows "$seed" --copy-start "$STARTED_AT" --copy-end "$COPY_END" || status=1
    rm -f "$tmp/restore-copy.db"
    t0=$(now_ms)
    "$bin" restore --from "$tmp/dest" --to "$tmp/restore-newest.db" >"$tmp/restore2.txt" ||
        { cat "$tmp/restore2.txt"; status=1; }
    echo "restore to the newest moment (full copy + the capture taken at close):" \
        "$(($(now_ms) - t0)) ms"
    "$tool" compare --a "$tmp/data/main.db" --b "$tmp/restore-newest.db" || status=1
fi
echo "the five worst seconds (seconds from the trigger, writes due, failed, p99 ms, max ms):"
grep -v '^#' "$tmp/timeline.txt" | sort -k5,5 -g -r | head -5 | sed 's/^/  /'
[ "$status" = 0 ] && echo "== done ==" || echo "== FAILED (see above) =="
exit "$status"
