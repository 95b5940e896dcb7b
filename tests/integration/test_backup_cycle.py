"""Change-capture backups end to end through a real node: a 100 MB database whose first turn
is a full copy taken while a client keeps writing, change pieces taken on POST /backup, then
`gatestream restore --from <destination folder>` to the newest moment (compared row by row with
the live file) and to a moment between two turns (exactly the rows committed before it); a
damaged and a missing piece are detected (verify answers 502 BACKUP_DESTINATION_ERROR, restore
refuses with BACKUP_CHAIN_BROKEN); the backup routes, their body checks and refusals; and a
restore over the wire (POST /db/main/backup/restore), which rebuilds the database in place.
"""
import hashlib
import os
import sqlite3
import subprocess
import threading
import time

from gslib import GATESTREAM, Server, check, error_code, finish

TOKEN = {"Authorization": "Bearer ops-token"}
ROWS = 100000  # of ~1 KB each: a ~100 MB database
WAIT = 90


def run(*args, timeout=180):
    p = subprocess.run([GATESTREAM, *args], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def digest(path, where=""):
    """(row count, sha256 over every row in id order) of table t in the file at path."""
    con = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
    h = hashlib.sha256()
    n = 0
    for rid, v in con.execute("SELECT id, v FROM t %s ORDER BY id" % where):
        h.update(str(rid).encode())
        h.update(v if isinstance(v, bytes) else str(v).encode())
        n += 1
    ok = con.execute("PRAGMA quick_check").fetchone()[0]
    con.close()
    return n, h.hexdigest(), ok


def make_database(path):
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB, tag TEXT)")
    con.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i<%d) "
                "INSERT INTO t (id, v, tag) SELECT i, randomblob(1000), 'seed' FROM n" % ROWS)
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


srv = Server(extra_plugins="""
  - name: tokens
    plugin: auth_token
    kind: hook
    config:
      tokens:
        - { token: ops-token, name: ops, databases: ["*"] }
  - name: files
    plugin: fs
    kind: backup_destination
    config: { dir: DEST_DIR }
""", extra_server="  accept_backup_restore: true\n  metrics: { enabled: true, authenticate: false }\n",
             extra_databases="""    backups:
      destination: files
      interval_ms: 3600000
      piece_bytes: 4194304
  - { id: plain, path: plain.db }
""")
DEST = os.path.join(srv.tmp, "dest")
with open(srv.config) as f:
    cfg = f.read().replace("DEST_DIR", DEST)
with open(srv.config, "w") as f:
    f.write(cfg)
os.makedirs(srv.data_dir)
live_path = os.path.join(srv.data_dir, "main.db")
make_database(live_path)
check(os.path.getsize(live_path) > 100 * 1000 * 1000, "the database is over 100 MB")


def status():
    st, b, _ = srv.request("GET", "/db/main/backup", headers=TOKEN)
    return b if st == 200 else {}


def wait_for(pred, what, timeout=WAIT):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    check(False, "timed out waiting for " + what)
    return None


def turn():
    """POST /backup and wait until the turn it queued has finished (a new lastRun or error)."""
    before = status()
    prev = (before.get("lastRun") or {}).get("runId")
    prev_err = (before.get("lastError") or {}).get("at")
    st, b, _ = srv.post("/db/main/backup", None, headers=TOKEN)
    check(st == 202 and b == {"started": True}, "POST /backup answers 202 at once: %s %s" % (st, b))

    def done():
        s = status()
        if s.get("running"):
            return None
        run_id = (s.get("lastRun") or {}).get("runId")
        err_at = (s.get("lastError") or {}).get("at")
        return s if (run_id != prev or err_at != prev_err) else None

    return wait_for(done, "a backup turn")


try:
    srv.start()
    # a client writes while the first turn (a full copy of 100 MB) runs
    stop = threading.Event()
    writes = {"ok": 0, "bad": 0, "next": ROWS + 1}

    def writer():
        deadline = time.time() + 120
        while not stop.is_set() and time.time() < deadline:
            i = writes["next"]
            s, _, _ = srv.post("/db/main/execute",
                               {"sql": "INSERT INTO t (id, v, tag) VALUES (?, randomblob(100), "
                                       "'during')", "params": [i]}, headers=TOKEN)
            if s == 200:
                writes["ok"] += 1
                writes["next"] = i + 1
            else:
                writes["bad"] += 1
            time.sleep(0.005)

    th = threading.Thread(target=writer)
    th.start()
    first = wait_for(lambda: (status().get("lastRun") or {}).get("kind") == "full" and status(),
                     "the full copy of the first turn")
    during_copy = writes["ok"]
    s = status()
    check(s.get("chainId") and (s.get("lastRun") or {}).get("kind") == "full",
          "the first turn made a full copy: %s" % s)
    full = s.get("lastRun") or {}
    check(full.get("route") == "staged" and full.get("pieceCount", 0) >= 25 and
          len(full.get("fingerprint", "")) == 64 and full.get("bytesWritten", 0) > 100e6,
          "the full copy's report: %s" % {k: full.get(k) for k in
                                          ("route", "pieceCount", "bytesWritten")})
    check(during_copy > 0, "writes were served while the full copy ran (%d)" % during_copy)
    s = turn()  # a change piece with the writes made so far, the writer still running
    check((s.get("lastRun") or {}).get("kind") == "change", "POST /backup took a change piece")
    stop.set()
    th.join(timeout=30)
    check(writes["bad"] == 0, "no write failed during the backups: %s" % writes)
    turn()  # everything committed so far
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"}, headers=TOKEN)
    rows_at_m = b["rows"][0]["n"] if st == 200 else -1
    time.sleep(0.02)
    moment = int(time.time() * 1000)
    time.sleep(0.02)
    st, _, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO t (id, v, tag) SELECT id + 1000000, "
                                                   "v, 'after' FROM t WHERE id <= 500"},
                        headers=TOKEN)
    check(st == 200, "writes after the moment")
    turn()

    # ---- the routes ----
    st, b, _ = srv.request("GET", "/db/main/backup/chain", headers=TOKEN)
    chains = b.get("chains", []) if st == 200 else []
    check(st == 200 and len(chains) == 1, "one chain: %s" % st)
    chain = chains[0] if chains else {}
    base = chain.get("base") or {}
    changes = chain.get("changes", [])
    check(base.get("kind") == "full" and len(changes) >= 3 and
          [c["sequence"] for c in changes] == list(range(1, len(changes) + 1)),
          "the chain holds its full copy and change pieces 1..n")
    st, b, _ = srv.post("/db/main/backup/verify", {"name": base.get("name")}, headers=TOKEN)
    check(st == 200 and b.get("kind") == "full" and b.get("bytesRead") == base.get("bytesWritten")
          and b.get("fingerprint") == base.get("fingerprint"), "verify the full copy: %s %s" %
          (st, b))
    st, b, _ = srv.post("/db/main/backup/verify", {}, headers=TOKEN)
    check(st == 400 and error_code(b) == "INVALID_REQUEST", "verify without name: %s" % b)
    st, b, _ = srv.post("/db/main/backup/verify", {"name": "no-such-backup"}, headers=TOKEN)
    check(st == 409 and error_code(b) == "BACKUP_CHAIN_BROKEN", "verify an unknown name: %s" % b)
    st, b, _ = srv.post("/db/main/backup/verify", [1], headers=TOKEN)
    check(st == 400 and error_code(b) == "INVALID_REQUEST", "a body that is no object: %s" % b)
    st, b, _ = srv.post("/db/main/backup/safe-to-delete", "", headers=TOKEN)
    check(st == 200 and b == {"records": []}, "nothing is safe to delete: %s %s" % (st, b))
    for bad in ({"restorableFrom": -1}, {"restorableFrom": 1.5}, {"restorableFrom": "x"}):
        st, b, _ = srv.post("/db/main/backup/safe-to-delete", bad, headers=TOKEN)
        check(st == 400 and error_code(b) == "INVALID_REQUEST", "safe-to-delete %s: %s" % (bad, b))
    st, b, _ = srv.request("GET", "/db/plain/backup", headers=TOKEN)
    check(st == 501 and error_code(b) == "BACKUP_UNSUPPORTED", "no backups configured: %s" % b)
    st, b, _ = srv.request("GET", "/db/nope/backup", headers=TOKEN)
    check(st == 404 and error_code(b) == "DATABASE_NOT_FOUND", "unknown database: %s" % b)
    st, b, _ = srv.request("GET", "/db/main/backup")
    check(st == 401, "the backup routes are authenticated: %s" % st)
    st, b, _ = srv.request("GET", "/db/main/backup/restore", headers=TOKEN)
    check(st == 200 and b == {"state": "idle"}, "no restore yet: %s" % b)
    for bad in ({"moment": -5}, {"moment": 2.5}, {"batchSize": 0}, {"batchSize": 5000}):
        st, b, _ = srv.post("/db/main/backup/restore", bad, headers=TOKEN)
        check(st == 400 and error_code(b) == "INVALID_REQUEST", "restore %s: %s" % (bad, b))
    st, m, _ = srv.request("GET", "/metrics", raw=True)
    m = m.decode() if st == 200 else ""
    check('gatestream_backup_turns_total{db="main",outcome="full"} 1' in m and
          'gatestream_backup_run_duration_seconds_count{db="main",kind="change"}' in m and
          "gatestream_backup_last_success_timestamp_seconds" in m and 'db="plain"' not in
          m.split("gatestream_backup_turns_total")[1].split("# HELP")[0],
          "backup outcomes and durations in /metrics")

    # ---- damage: a flipped byte, then a missing piece ----
    piece_dir = os.path.join(DEST, changes[0]["name"]) if changes else DEST
    pieces = sorted(os.listdir(piece_dir)) if os.path.isdir(piece_dir) else []
    check(len(pieces) >= 1, "the fs destination stores <name>/<index>.piece: %s" % pieces)
    victim = os.path.join(piece_dir, pieces[0]) if pieces else ""
    with open(victim, "r+b") as f:
        f.seek(100)
        orig = f.read(1)
        f.seek(100)
        f.write(bytes([orig[0] ^ 0x55]))
    st, b, _ = srv.post("/db/main/backup/verify", {"name": changes[0]["name"]}, headers=TOKEN)
    check(st == 502 and error_code(b) == "BACKUP_DESTINATION_ERROR" and
          "fingerprint" in b["error"]["message"], "verify finds the damaged piece: %s %s" % (st, b))
    out = os.path.join(srv.tmp, "restored", "damaged.db")
    rc, o, e = run("restore", "--from", DEST, "--to", out)
    check(rc == 1 and "BACKUP_CHAIN_BROKEN" in e and not os.path.exists(out),
          "restore refuses a damaged chain: %s %s" % (rc, e))
    with open(victim, "r+b") as f:
        f.seek(100)
        f.write(orig)
    hidden = victim + ".moved"
    os.rename(victim, hidden)
    st, b, _ = srv.post("/db/main/backup/verify", {"name": changes[0]["name"]}, headers=TOKEN)
    check(st == 502 and error_code(b) == "BACKUP_DESTINATION_ERROR" and
          "missing piece" in b["error"]["message"], "verify finds the missing piece: %s" % b)
    rc, o, e = run("restore", "--from", DEST, "--to", out)
    check(rc == 1 and "BACKUP_CHAIN_BROKEN" in e and not os.path.exists(out),
          "restore refuses a chain missing a piece: %s %s" % (rc, e))
    os.rename(hidden, victim)
    st, b, _ = srv.post("/db/main/backup/verify", {"name": changes[0]["name"]}, headers=TOKEN)
    check(st == 200, "the piece put back verifies: %s %s" % (st, b))

    # ---- restore over the wire to the moment ----
    st, b, _ = srv.post("/db/main/backup/restore", {"moment": moment, "batchSize": 2},
                        headers=TOKEN)
    check(st == 202 and b == {"started": True}, "restore accepted: %s %s" % (st, b))
    st2, b2, _ = srv.post("/db/main/backup/restore", {}, headers=TOKEN)
    check(st2 == 409 and error_code(b2) == "BACKUP_RESTORE_IN_PROGRESS",
          "a second restore while one runs: %s %s" % (st2, b2))
    seen_404 = False

    def restored():
        global seen_404
        s, q, _ = srv.post("/db/main/query", {"sql": "SELECT 1"}, headers=TOKEN)
        if s == 404:
            seen_404 = True
        st, b, _ = srv.request("GET", "/db/main/backup/restore", headers=TOKEN)
        return b if st == 200 and b.get("state") in ("done", "failed") else None

    rs = wait_for(restored, "the restore over the wire")
    check(rs and rs.get("state") == "done" and not rs.get("reopenError") and
          rs.get("report", {}).get("restoresTo", 1 << 62) <= moment,
          "the restore is done: %s" % rs)
    check(seen_404, "the database answered 404 while it was rebuilt")
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"}, headers=TOKEN)
    check(st == 200 and b["rows"][0]["n"] == rows_at_m,
          "the rebuilt database holds exactly the rows before the moment: %s vs %d" %
          (b, rows_at_m))
    after = turn()  # the first turn after the reopen starts a fresh chain
    check(after.get("chainId") and after.get("chainId") != chain.get("chainId") and
          (after.get("lastRun") or {}).get("kind") == "full",
          "a fresh chain after the restore: %s" % after)
    # a restore that cannot be planned fails, and the database opens again untouched
    st, b, _ = srv.post("/db/main/backup/restore", {"moment": 1000}, headers=TOKEN)
    check(st == 202, "a restore to a moment no chain reaches is accepted: %s %s" % (st, b))
    rs = wait_for(restored, "the failed restore")
    check(rs and rs.get("state") == "failed" and
          (rs.get("error") or {}).get("code") == "BACKUP_CHAIN_BROKEN" and
          not rs.get("reopenError"), "the restore failed with BACKUP_CHAIN_BROKEN: %s" % rs)
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"}, headers=TOKEN)
    check(st == 200 and b["rows"][0]["n"] == rows_at_m, "the database serves again: %s" % b)
    srv.stop()

    # ---- restores from the destination folder with the CLI ----
    live = digest(live_path)
    out = os.path.join(srv.tmp, "restored", "latest.db")
    rc, o, e = run("restore", "--from", DEST, "--to", out)
    check(rc == 0 and "restored chain" in o, "restore the newest moment: %s %s %s" % (rc, o, e))
    got = digest(out) if rc == 0 else None
    check(got == live and live[2] == "ok",
          "the restored database equals the live one row by row (%s vs %s)" % (got, live))
    out = os.path.join(srv.tmp, "restored", "at-moment.db")
    old_chain = chain.get("chainId")
    # the first chain is older: restore it at the moment through its own records
    rc, o, e = run("restore", "--from", DEST, "--to", out, "--moment", str(moment))
    check(rc == 0 and old_chain in o, "restore to the moment: %s %s %s" % (rc, o, e))
    if rc == 0:
        n, _, ok = digest(out)
        check(n == rows_at_m and ok == "ok", "exactly the rows committed before the moment: %d "
              "vs %d" % (n, rows_at_m))
        n_after, _, _ = digest(out, "WHERE tag = 'after'")
        check(n_after == 0, "no row written after the moment")
    rc, o, e = run("restore", "--from", DEST, "--to", out)
    check(rc == 1 and "--replace" in e, "an existing target needs --replace: %s" % e)
    rc, o, e = run("restore", "--from", DEST, "--to", out + "x", "--moment", "1000")
    check(rc == 1 and "BACKUP_CHAIN_BROKEN" in e, "a moment before every full copy: %s" % e)
finally:
    srv.stop()
    srv.cleanup()

finish()
