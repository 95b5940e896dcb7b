"""Full-copy backups end to end: a node serving the default config while `gatestream backup`
copies its database and a client keeps writing, then `gatestream restore` into a new path,
checked with python's sqlite3 (every row written before the backup started is there; the
copy passes integrity_check). Also the usage errors and refusals of both commands.

Then issue 4's acceptance line on the node `make run` starts: gatestream serving
config/default.yaml itself (only --port and --data-dir given, so it runs beside other tests),
`gatestream backup --config config/default.yaml` of its running database, `gatestream restore`,
and the sqlite3 shell's dump of every user table identical in the restored file and the live
one; the restored file also holds every row the client wrote while the backup ran that was
answered before the copy started, each identical to its live row."""
import os
import signal
import sqlite3
import subprocess
import threading
import time

from gslib import GATESTREAM, PLUGIN_DIR, Server, check, finish, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CONFIG = os.path.join(ROOT, "config", "default.yaml")


def run(*args, timeout=120):
    p = subprocess.run([GATESTREAM, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


with Server() as srv:
    srv.start()
    st, body, _ = srv.post("/db/main/execute",
                           {"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)"})
    check(st == 200, "create table: %s %s" % (st, body))
    st, body, _ = srv.post("/db/main/execute", {
        "sql": "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<8000) "
               "INSERT INTO items (v) SELECT printf('%0200d', i) FROM n"})
    check(st == 200, "seed rows: %s %s" % (st, body))
    before = 8000

    # a client keeps writing while the backup runs (paced, so the copy can finish)
    stop = threading.Event()
    writes = {"ok": 0, "bad": 0}

    def writer():
        deadline = time.time() + 60
        while not stop.is_set() and time.time() < deadline:
            s, _, _ = srv.post("/db/main/execute",
                               {"sql": "INSERT INTO items (v) VALUES ('during')"})
            writes["ok" if s == 200 else "bad"] += 1
            time.sleep(0.02)

    th = threading.Thread(target=writer)
    th.start()
    out_dir = os.path.join(srv.tmp, "backups", "nightly")
    t_wait = time.time() + 10
    while writes["ok"] < 3 and time.time() < t_wait:
        time.sleep(0.01)
    rc = out = err = None
    for attempt in range(3):  # BACKUP_RESTARTED asks for a retry; the writes here are paced
        rc, out, err = run("backup", "--config", srv.config, "--db", "main", "--to", out_dir)
        if rc == 0 or "BACKUP_RESTARTED" not in err:
            break
    during = writes["ok"]
    time.sleep(0.1)
    stop.set()
    th.join(timeout=30)
    check(rc == 0, "backup while serving exits 0: %s %s %s" % (rc, out, err))
    check(writes["bad"] == 0, "the node kept serving writes during the backup: %s" % writes)
    check(during >= 3, "writes ran during the backup: %s" % writes)
    check("pages" in out and "bytes" in out and "restarts" in out and "ms" in out,
          "summary line: %r" % out)
    files = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    check(len(files) == 1 and files[0].startswith("backup-") and files[0].endswith(".db")
          and ":" not in files[0], "one backup file named backup-<time>.db: %s" % files)
    backup = os.path.join(out_dir, files[0]) if files else ""

    # the node still serves after the backup
    st, body, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM items"})
    check(st == 200, "query after backup: %s %s" % (st, body))
    st, _, _ = srv.request("GET", "/health")
    check(st == 200, "health after backup")

    # restore into a new path and compare
    target = os.path.join(srv.tmp, "restored", "main.db")
    rc, out, err = run("restore", "--from", out_dir, "--to", target)
    check(rc == 0, "restore from the folder exits 0: %s %s %s" % (rc, out, err))
    if rc == 0:
        con = sqlite3.connect(target)
        check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity ok")
        ids = {r[0] for r in con.execute("SELECT id FROM items WHERE v <> 'during'")}
        check(ids == set(range(1, before + 1)),
              "every row written before the backup is there (%d of %d)" % (len(ids), before))
        total = con.execute("SELECT count(*) FROM items").fetchone()[0]
        live = sqlite3.connect(os.path.join(srv.data_dir, "main.db"))
        now_total = live.execute("SELECT count(*) FROM items").fetchone()[0]
        live.close()
        check(before <= total <= now_total, "row count %d within %d..%d" % (total, before,
                                                                              now_total))
        con.close()

    # refusals
    rc, out, err = run("restore", "--from", backup, "--to", target)
    check(rc == 1 and "BACKUP_ERROR" in err and "--replace" in err,
          "restore over an existing file without --replace: %s %s" % (rc, err))
    rc, out, err = run("restore", "--from", backup, "--to", target, "--replace")
    check(rc == 0, "restore --replace: %s %s" % (rc, err))
    rc, out, err = run("restore", "--from", backup, "--to", target + "2", "--moment", "123")
    check(rc == 2 and "chain" in err, "--moment is refused naming chains: %s %s" % (rc, err))
    bad = os.path.join(srv.tmp, "bad.db")
    with open(bad, "wb") as f:
        f.write(b"this is not a database" * 300)
    rc, out, err = run("restore", "--from", bad, "--to", os.path.join(srv.tmp, "x.db"))
    check(rc == 1 and "BACKUP_ERROR" in err, "a damaged backup is refused: %s %s" % (rc, err))
    check(not os.path.exists(os.path.join(srv.tmp, "x.db")), "nothing restored from it")
    rc, out, err = run("backup", "--config", srv.config, "--db", "main",
                       "--to", os.path.join(srv.tmp, "a", "..", "b"))
    check(rc == 1 and "BACKUP_ERROR" in err, "a '..' path is refused: %s %s" % (rc, err))
    rc, out, err = run("backup", "--config", srv.config, "--db", "nope", "--to", out_dir)
    check(rc == 2 and "nope" in err, "unknown database: %s %s" % (rc, err))
    rc, out, err = run("backup", "--config", srv.config, "--db", "main")
    check(rc == 2 and "--to" in err, "missing --to: %s %s" % (rc, err))
    rc, out, err = run("restore", "--to", target)
    check(rc == 2 and "--from" in err, "missing --from: %s %s" % (rc, err))
    rc, out, err = run("backup", "--help")
    check(rc == 0 and "writing connection" in out, "backup --help explains the copy")


# ---- the default node (config/default.yaml), backed up while running, restored, compared ----

def sqlite3_shell(path, *commands):
    """The sqlite3 shell's output for commands run on the file at path (read-only)."""
    p = subprocess.run(["sqlite3", "-readonly", path, *commands], capture_output=True,
                       text=True, timeout=120)
    check(p.returncode == 0, "sqlite3 %s %s: %s" % (path, commands, p.stderr))
    return p.stdout


def start_default_node(node):
    """Start gatestream on config/default.yaml itself, on node's port and data dir."""
    env = dict(os.environ)
    if PLUGIN_DIR:
        env["GS_PLUGIN_DIR"] = PLUGIN_DIR
    node.log = open(node.log_path, "ab")
    node.proc = subprocess.Popen(
        [GATESTREAM, "--config", DEFAULT_CONFIG, "--port", str(node.port), "--data-dir",
         node.data_dir], stdout=node.log, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 20
    while time.time() < deadline and node.proc.poll() is None:
        try:
            if node.request("GET", "/health", timeout=1.0)[0] == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


USER_TABLES = ("accounts", "events")
node = Server(port=free_port())  # its temp dir, port and HTTP helpers; started just below
try:
    check(start_default_node(node), "the default node starts: %s" % node.read_log())
    for sql in [
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, balance REAL, "
            "photo BLOB, note TEXT)",
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, account INTEGER, "
            "kind TEXT, at INTEGER)",
            "CREATE INDEX events_by_account ON events (account, at)",
            # every storage class, NULLs, an empty string and a multi-byte name
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<5000) "
            "INSERT INTO accounts (id, name, balance, photo, note) SELECT i, "
            "'account ' || i || ' \u00e9\u00e8', i * 1.25 - 700.5, "
            "CASE WHEN i % 3 = 0 THEN NULL ELSE randomblob(50 + i % 200) END, "
            "CASE WHEN i % 5 = 0 THEN '' WHEN i % 7 = 0 THEN NULL ELSE printf('%0300d', i) END "
            "FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<20000) "
            "INSERT INTO events (account, kind, at) SELECT 1 + i % 5000, "
            "CASE i % 3 WHEN 0 THEN 'open' WHEN 1 THEN 'pay' ELSE 'close' END, "
            "1700000000000 + i * 37 FROM n"]:
        st, body, _ = node.post("/db/main/execute", {"sql": sql})
        check(st == 200, "%s: %s %s" % (sql[:40], st, body))
    live = os.path.join(node.data_dir, "main.db")

    # 1. a client writes while the backup runs (each write answered or not, before or after)
    stop = threading.Event()
    answered = []  # (id, time the answer came back)

    def write_events():
        i = 0
        deadline = time.time() + 60
        while not stop.is_set() and time.time() < deadline:
            i += 1
            rid = 1000000 + i
            s_, _, _ = node.post("/db/main/execute", {
                "sql": "INSERT INTO events (id, account, kind, at) VALUES (?, ?, 'during', ?)",
                "params": [rid, i % 5000, int(time.time() * 1000)]})
            if s_ == 200:
                answered.append((rid, time.time()))
            time.sleep(0.005)

    th = threading.Thread(target=write_events)
    th.start()
    t_wait = time.time() + 10
    while len(answered) < 5 and time.time() < t_wait:
        time.sleep(0.01)
    out_dir = os.path.join(node.tmp, "nightly")
    started = time.time()
    rc = out = err = None
    for attempt in range(3):  # BACKUP_RESTARTED asks for a retry; the writes here are paced
        started = time.time()
        rc, out, err = run("backup", "--config", DEFAULT_CONFIG, "--data-dir", node.data_dir,
                           "--db", "main", "--to", out_dir)
        if rc == 0 or "BACKUP_RESTARTED" not in err:
            break
    stop.set()
    th.join(timeout=30)
    check(rc == 0, "backup of the running default node exits 0: %s %s %s" % (rc, out, err))
    restored = os.path.join(node.tmp, "restored", "main.db")
    rc, out, err = run("restore", "--from", out_dir, "--to", restored)
    check(rc == 0, "restore exits 0: %s %s %s" % (rc, out, err))
    if rc == 0:
        before = [rid for rid, t in answered if t < started]
        check(len(before) >= 5, "writes were answered before the backup started: %d" %
              len(before))
        con = sqlite3.connect("file:%s?mode=ro" % restored, uri=True)
        live_con = sqlite3.connect("file:%s?mode=ro" % live, uri=True)
        got = {r[0]: r for r in con.execute("SELECT * FROM events WHERE kind = 'during'")}
        missing = [rid for rid in before if rid not in got]
        check(not missing, "writes answered before the backup started are restored (missing "
              "%s of %d)" % (missing[:5], len(before)))
        differ = [rid for rid, row in got.items()
                  if live_con.execute("SELECT * FROM events WHERE id = ?", (rid,)).fetchone()
                  != row]
        check(not differ, "every restored row written during the backup equals its live row: "
              "%s" % differ[:5])
        con.close()
        live_con.close()
        check(sqlite3_shell(restored, "PRAGMA integrity_check").strip() == "ok",
              "the restored file passes integrity_check")

    # 2. the node keeps running, no write in flight: backup, restore, identical rows
    quiet_dir = os.path.join(node.tmp, "quiet")
    rc, out, err = run("backup", "--config", DEFAULT_CONFIG, "--data-dir", node.data_dir,
                       "--db", "main", "--to", quiet_dir)
    check(rc == 0, "backup of the idle running node exits 0: %s %s %s" % (rc, out, err))
    again = os.path.join(node.tmp, "restored-quiet.db")
    rc, out, err = run("restore", "--from", quiet_dir, "--to", again)
    check(rc == 0, "restore exits 0: %s %s %s" % (rc, out, err))
    check(node.request("GET", "/health")[0] == 200, "the node still serves")
    if rc == 0:
        dump_live = sqlite3_shell(live, ".dump %s" % " ".join(USER_TABLES))
        dump_restored = sqlite3_shell(again, ".dump %s" % " ".join(USER_TABLES))
        inserts = dump_live.count("INSERT INTO")
        check(inserts >= 25000, "the dump holds every row: %d INSERTs" % inserts)
        check(dump_live == dump_restored,
              "sqlite3 .dump of %s is identical in the live and the restored file (%d and %d "
              "bytes)" % (", ".join(USER_TABLES), len(dump_live), len(dump_restored)))
        for t in USER_TABLES:
            q = "SELECT count(*), total(length(CAST(%s AS BLOB))) FROM %s" % (
                "name" if t == "accounts" else "kind", t)
            check(sqlite3_shell(live, q) == sqlite3_shell(again, q),
                  "%s: same count in both files" % t)
    code, secs = node.stop()
    check(code == 0, "the default node stops cleanly: %s" % code)
finally:
    if node.proc and node.proc.poll() is None:
        node.proc.send_signal(signal.SIGKILL)
        node.proc.wait(timeout=10)
    node.cleanup()

finish()
