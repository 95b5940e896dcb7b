"""Full-copy backups end to end: a node serving the default config while `gatestream backup`
copies its database and a client keeps writing, then `gatestream restore` into a new path,
checked with python's sqlite3 (every row written before the backup started is there; the
copy passes integrity_check). Also the usage errors and refusals of both commands."""
import os
import sqlite3
import subprocess
import threading
import time

from gslib import GATESTREAM, Server, check, finish


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

finish()
