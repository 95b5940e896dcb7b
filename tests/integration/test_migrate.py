"""Schema migrations end to end: `gatestream migrate` against a temp config and data dir
(status, apply, --to, rollback, a broken migration leaving the database at the previous
version, an edited migration, usage errors), then nodes started with databases[].migrations:
one serving the migrated schema, one refusing to start on a broken migration, and the CLI run
against a live node's file. The database is checked with python's sqlite3."""
import os
import shutil
import sqlite3
import subprocess
import tempfile

from gslib import GATESTREAM, PLUGIN_DIR, Server, check, finish, free_port

env = dict(os.environ, GS_PLUGIN_DIR=PLUGIN_DIR)
tmp = tempfile.mkdtemp(prefix="gs-migrate-")
conf_dir = os.path.join(tmp, "conf")
mig_dir = os.path.join(conf_dir, "migrations")
data_dir = os.path.join(tmp, "data")
os.makedirs(mig_dir)
db_file = os.path.join(data_dir, "main.db")

CONFIG = """
node: {{ id: mig-node, data_dir: {data_dir} }}
log: {{ level: info }}
plugins:
  - name: http
    kind: client_transport
server:
  host: 127.0.0.1
  port: {port}
  accept_sql: true
databases:
  - id: main
    path: main.db
    migrations: {migrations}
  - id: plain
    path: plain.db
  - id: ro
    path: ro.db
    read_only: true
    migrations: {migrations}
"""


def write_config(path, migrations="migrations", port=0, data=data_dir):
    with open(path, "w") as f:
        f.write(CONFIG.format(data_dir=data, port=port, migrations=migrations))


config = os.path.join(conf_dir, "gatestream.yaml")
write_config(config)


def put(name, sql):
    with open(os.path.join(mig_dir, name), "w") as f:
        f.write(sql)


def drop(name):
    os.unlink(os.path.join(mig_dir, name))


put("001_create_users.up.sql", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n")
put("001_create_users.down.sql", "DROP TABLE users;\n")
put("002_add_orders.up.sql",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id));\r\n"
    "CREATE INDEX orders_user ON orders(user_id);\r\n")
put("002_add_orders.down.sql", "DROP TABLE orders;\n")
put("003_seed.up.sql", "INSERT INTO users (name) VALUES ('ada');\nINSERT INTO users (name) VALUES ('alan');\n")
put("003_seed.down.sql", "DELETE FROM users WHERE name IN ('ada', 'alan');\n")
put("README.md", "not a migration\n")


def migrate(*args, cfg=None, timeout=60):
    p = subprocess.run([GATESTREAM, "migrate", "--config", cfg or config, *args],
                       capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


def db_state(path=db_file):
    c = sqlite3.connect(path)
    try:
        uv = c.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = []
        if "_sirannon_migrations" in tables:
            versions = [r[0] for r in c.execute(
                "SELECT version FROM _sirannon_migrations ORDER BY version")]
        return uv, tables, versions
    finally:
        c.close()


def status_rows(out):
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            rows[int(parts[0])] = parts[2]
    return rows


# ---- the CLI ----

rc, out, err = migrate("--help")
check(rc == 0 and "busy_timeout" in out and "serialises writers" in out and "stopped node" in out,
      "migrate --help documents live-node safety: %r" % out[-400:])
rc, out, err = migrate("--db", "main", "--status")
check(rc == 0, "status on a fresh data dir: rc=%s %s" % (rc, err))
check("not created yet" in out and status_rows(out) == {1: "pending", 2: "pending", 3: "pending"},
      "fresh status lists three pending: %r" % out)
check(not os.path.exists(db_file), "status creates no database file")

rc, out, err = migrate("--db", "main", "--to", "2")
check(rc == 0 and "applied 1_create_users" in out and "applied 2_add_orders" in out and
      "3_seed" not in out, "apply --to 2: rc=%s out=%r err=%r" % (rc, out, err))
uv, tables, versions = db_state()
check(uv == 2 and versions == [1, 2] and "orders" in tables, "after --to 2: %s %s" % (uv, versions))

rc, out, err = migrate("--db", "main")
check(rc == 0 and "applied 3_seed" in out and "schema at version 3" in out, "apply the rest: %r" % out)
rc, out, err = migrate("--db", "main")
check(rc == 0 and "nothing to apply" in out, "again: nothing to apply: %r" % out)

rc, out, err = migrate("--db", "main", "--status")
rows = status_rows(out)
check(rc == 0 and rows == {1: "applied", 2: "applied", 3: "applied"}, "status after apply: %r" % out)
check("user_version 3" in out and "3 applied, 0 pending" in out, "status summary: %r" % out)

c = sqlite3.connect(db_file)
stored = c.execute("SELECT checksum FROM _sirannon_migrations WHERE version = 2").fetchone()[0]
c.close()


def fnv1a64(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
    return "%016x" % h


with open(os.path.join(mig_dir, "002_add_orders.up.sql"), "rb") as f:
    raw = f.read().decode()
want = fnv1a64(raw.replace("\r\n", "\n").replace("\r", "\n").strip().encode())
check(stored == want, "stored checksum %s is FNV-1a 64 of the normalised SQL %s" % (stored, want))

rc, out, err = migrate("--db", "main", "--rollback")
check(rc == 0 and "rolled back 3_seed" in out, "rollback latest: %r %r" % (out, err))
uv, tables, versions = db_state()
check(uv == 2 and versions == [1, 2], "after rollback: %s %s" % (uv, versions))
c = sqlite3.connect(db_file)
check(c.execute("SELECT count(*) FROM users").fetchone()[0] == 0, "seed rows removed")
c.close()

rc, out, err = migrate("--db", "main", "--rollback", "--to", "0")
check(rc == 0 and out.index("rolled back 2_add_orders") < out.index("rolled back 1_create_users"),
      "rollback --to 0 in descending order: %r" % out)
uv, tables, versions = db_state()
check(uv == 0 and versions == [] and "users" not in tables and "orders" not in tables,
      "after rollback --to 0: %s %s %s" % (uv, versions, tables))

rc, out, err = migrate("--db", "main")
check(rc == 0 and db_state()[0] == 3, "re-apply all: %r %r" % (out, err))

# a broken migration: its first statement would succeed, its second fails
put("004_broken.up.sql", "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);\n")
rc, out, err = migrate("--db", "main")
check(rc == 1, "broken migration exits 1: rc=%s" % rc)
check("MIGRATION_ERROR" in err and "4_broken" in err and "no_such_table" in err and
      "version 3" in err, "broken migration message names version and cause: %r" % err)
uv, tables, versions = db_state()
check(uv == 3 and versions == [1, 2, 3] and "half_done" not in tables,
      "database stays at version 3 with nothing of 4: %s %s %s" % (uv, versions, tables))
c = sqlite3.connect(db_file)
check(c.execute("SELECT count(*) FROM users").fetchone()[0] == 2, "earlier rows kept")
c.close()
rc, out, err = migrate("--db", "main", "--status")
check(rc == 0 and status_rows(out).get(4) == "pending", "status shows 4 pending: %r" % out)
drop("004_broken.up.sql")

# an applied migration edited afterwards
path1 = os.path.join(mig_dir, "001_create_users.up.sql")
with open(path1) as f:
    original = f.read()
with open(path1, "w") as f:
    f.write("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);\n")
rc, out, err = migrate("--db", "main", "--status")
check(rc == 1 and status_rows(out).get(1) == "modified", "status flags the edit: %s %r" % (rc, out))
rc, out, err = migrate("--db", "main")
check(rc == 1 and "MIGRATION_CHECKSUM_MISMATCH" in err, "edited migration refused: %r" % err)
with open(path1, "w") as f:
    f.write("\r\n" + original.replace("\n", "\r\n") + "   ")  # only line ends and edges differ
rc, out, err = migrate("--db", "main")
check(rc == 0, "line endings and surrounding space do not count as an edit: %r" % err)
with open(path1, "w") as f:
    f.write(original)

# usage and config errors exit 2
rc, out, err = migrate("--status")
check(rc == 2 and "--db" in err, "no --db: %s %r" % (rc, err))
rc, out, err = migrate("--db", "nosuch")
check(rc == 2 and "nosuch" in err, "unknown database: %s %r" % (rc, err))
rc, out, err = migrate("--db", "main", "--to", "abc")
check(rc == 2, "--to abc: %s" % rc)
rc, out, err = migrate("--db", "main", "--status", "--rollback")
check(rc == 2, "--status with --rollback: %s" % rc)
rc, out, err = migrate("--db", "plain")
check(rc == 2 and "migrations" in err, "database without a migrations folder: %s %r" % (rc, err))
rc, out, err = migrate("--db", "ro")
check(rc == 2 and "read_only" in err, "read-only database: %s %r" % (rc, err))
rc, out, err = migrate("--db", "main", "--bogus")
check(rc == 2, "unknown option: %s" % rc)
p = subprocess.run([GATESTREAM, "migrate", "--config", os.path.join(tmp, "missing.yaml"), "--db", "main"],
                   capture_output=True, text=True, timeout=30, env=env)
check(p.returncode == 2, "missing config: %s %r" % (p.returncode, p.stderr))
# a migrations folder with a file that does not follow the convention is a migration failure
put("notes.sql", "SELECT 1;")
rc, out, err = migrate("--db", "main")
check(rc == 1 and "MIGRATION_VALIDATION_ERROR" in err and "notes.sql" in err,
      "bad file name: %s %r" % (rc, err))
p = subprocess.run([GATESTREAM, "--check-config", config], capture_output=True, text=True,
                   timeout=30, env=env)
check(p.returncode != 0 and "migrations" in p.stderr and "notes.sql" in p.stderr,
      "--check-config proves the migration files: %s %r" % (p.returncode, p.stderr))
drop("notes.sql")

# ---- nodes ----

# a node on a fresh data dir applies the set before serving it
data2 = os.path.join(tmp, "data2")
port = free_port()
config2 = os.path.join(conf_dir, "node.yaml")
write_config(config2, migrations=mig_dir, port=port, data=data2)  # an absolute folder
os.makedirs(data2)
sqlite3.connect(os.path.join(data2, "ro.db")).close()  # a read-only database must exist
with open(config2) as f:
    srv = Server(yaml_text=f.read(), port=port)
srv.start()
st, body, _ = srv.post("/db/main/query", {"sql": "SELECT name FROM users ORDER BY id"})
check(st == 200 and [r["name"] for r in body["rows"]] == ["ada", "alan"],
      "node serves the migrated schema: %s %s" % (st, body))
st, body, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO orders (user_id) VALUES (1)"})
check(st == 200, "writes into a migrated table: %s %s" % (st, body))
log = srv.read_log()
check("applied migration 1_create_users" in log and "applied migration 3_seed" in log,
      "one log line per applied migration")
check("database 'ro' is read-only: its migrations were skipped" in log, "read-only database skipped")

# the CLI against the live node's file: safe because SQLite serialises the writers
put("004_add_email.up.sql", "ALTER TABLE users ADD COLUMN email TEXT;\n")
put("004_add_email.down.sql", "ALTER TABLE users DROP COLUMN email;\n")
rc, out, err = migrate("--db", "main", cfg=config2)
check(rc == 0 and "applied 4_add_email" in out, "migrate beside a live node: %s %r %r" % (rc, out, err))
st, body, _ = srv.post("/db/main/execute",
                       {"sql": "UPDATE users SET email = 'a@example.org' WHERE id = 1"})
check(st == 200, "the live node sees the new column: %s %s" % (st, body))
code, _ = srv.stop()
check(code == 0, "node stops cleanly: %s" % code)
uv, tables, versions = db_state(os.path.join(data2, "main.db"))
check(uv == 4 and versions == [1, 2, 3, 4], "node + CLI history: %s %s" % (uv, versions))
srv.cleanup()
drop("004_add_email.up.sql")
drop("004_add_email.down.sql")

# a node whose migration fails refuses to start: exit 1 naming database, version and cause
put("004_broken.up.sql", "CREATE TABLE half_done (x);\nSELECT * FROM missing_table;\n")
data3 = os.path.join(tmp, "data3")
config3 = os.path.join(conf_dir, "broken.yaml")
write_config(config3, port=free_port(), data=data3)
p = subprocess.run([GATESTREAM, "--config", config3], capture_output=True, text=True, timeout=60,
                   env=env)
check(p.returncode == 1, "node with a broken migration exits 1: %s" % p.returncode)
lines = [l for l in p.stderr.splitlines() if l.startswith("gatestream:")]
check(len(lines) == 1 and "database 'main'" in lines[0] and "4_broken" in lines[0] and
      "missing_table" in lines[0], "one line naming database, version and cause: %r" % p.stderr)
uv, tables, versions = db_state(os.path.join(data3, "main.db"))
check(uv == 3 and versions == [1, 2, 3] and "half_done" not in tables,
      "the refused node left the database at version 3: %s %s" % (uv, versions))
drop("004_broken.up.sql")

shutil.rmtree(tmp, ignore_errors=True)
finish()
