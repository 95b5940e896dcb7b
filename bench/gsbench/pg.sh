#!/usr/bin/env bash
# Start a throwaway PostgreSQL (Debian's postgresql, version 15 by default) in a temporary
# directory, run a command against it, and stop it afterwards (also on Ctrl-C or an error).
#
# Usage:
#   bench/gsbench/pg.sh COMMAND [ARGS...]    COMMAND sees GS_PG_URL (the Unix socket in the
#                                            temporary directory) and GS_PG_TCP_URL (loopback)
#   bench/gsbench/pg.sh                      start it, print the URLs, wait for Ctrl-C
#
# The server: initdb into a mkdtemp directory (trust authentication for the user `bench`,
# UTF8, C locale), listening on 127.0.0.1 at a free port and on a Unix socket in that
# directory, fsync on, synchronous_commit on (the benchmark sets it per session:
# on for full durability, off for relaxed). Tuned as a dedicated server on this machine
# would be: shared_buffers 1GB, max_wal_size 4GB and checkpoint_timeout 15min (no forced
# checkpoint inside a measurement), max_connections 200 (the sweep opens up to 64).
# Run as root, the server runs as the `postgres` user (initdb refuses root).
# Environment: PG_BIN (/usr/lib/postgresql/15/bin), PG_SHARED_BUFFERS (1GB), KEEP=1.
set -euo pipefail
pg_bin=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$pg_bin/initdb" ] || { echo "pg.sh: no $pg_bin/initdb: apt-get install postgresql" >&2; exit 1; }
tmp=$(mktemp -d /tmp/gsbench-pg.XXXXXX)
data=$tmp/data
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$tmp"
    chmod 700 "$tmp"
    as_pg=(runuser -u postgres --)
fi
started=0
cleanup() {
    local rc=$?
    set +e # every step of the cleanup runs, whatever an earlier one returned
    if [ $started = 1 ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$data" -m fast -w -t 60 stop > /dev/null 2>&1 ||
            echo "pg.sh: pg_ctl stop failed; see $tmp/server.log" >&2
    fi
    if [ "${KEEP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ $rc -ne 130 ]; }; then
        echo "pg.sh: files kept in $tmp (server log: $tmp/server.log)" >&2
    else
        rm -rf "$tmp"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
"${as_pg[@]}" "$pg_bin/initdb" -D "$data" -U bench --auth=trust -E UTF8 --locale=C \
    > "$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; exit 1; }
cat >> "$data/postgresql.conf" <<CONF
# gatestream-bench (bench/gsbench/pg.sh)
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = ${PG_SHARED_BUFFERS:-1GB}
max_connections = 200
max_wal_size = 4GB
checkpoint_timeout = 15min
logging_collector = off
CONF
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$data" -l "$tmp/server.log" -w -t 60 start > /dev/null ||
    { tail -n 20 "$tmp/server.log" >&2; exit 1; }
started=1
export GS_PG_URL="host=$tmp port=$port user=bench dbname=postgres"
export GS_PG_TCP_URL="host=127.0.0.1 port=$port user=bench dbname=postgres"
version=$("$pg_bin/postgres" --version)
echo "pg.sh: $version in $tmp (socket: $GS_PG_URL; tcp: $GS_PG_TCP_URL)" >&2
if [ $# -eq 0 ]; then
    echo "pg.sh: running until Ctrl-C" >&2
    while :; do sleep 3600; done
fi
"$@"
