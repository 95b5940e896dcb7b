"""Sources (databases[].sources): a follower node follows tables of two remote nodes, real
processes on loopback.

Two remote gatestream nodes (plain, no replication; HTTP + WebSocket) and one follower with
three sources: `eu` (prefix eu_, an exact table and a pattern), `us` (no prefix) and `dead`
(a closed port). The live sources copy their tables (under their local names), then follow
(a write on a remote appears on the follower, and in the follower's own change feed); the dead
source retries without holding the others up and logs its state once, not once per attempt.
The follower is killed with SIGKILL and restarted: it resumes from its stored positions (a
write made while it was down arrives, no row twice) without copying any table again. Then the
eu remote's database is replaced (a new epoch): the source is told it cannot resume, copies
the table again, and follows the new remote. Every wait is bounded.
"""
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gslib  # noqa: E402
from gslib import check, free_port  # noqa: E402
from wsclient import WSClient  # noqa: E402

WS_PLUGIN = """
  - name: ws
    kind: client_transport
"""

USERS = 250      # more than two pages of page_rows: 100
ORDERS = 30
ITEMS = 12


def sql(server, statement, params=None):
    body = {"sql": statement}
    if params is not None:
        body["params"] = params
    st, resp, _ = server.post("/db/main/execute", body)
    if st != 200:
        raise RuntimeError("execute %r -> %s %r" % (statement, st, resp))
    return resp


def query(server, statement):
    st, resp, _ = server.post("/db/main/query", {"sql": statement})
    if st != 200:
        return None
    return resp["rows"]


def scalar(server, statement):
    rows = query(server, statement)
    if not rows:
        return None
    return list(rows[0].values())[0]


def wait_for(what, fn, timeout=60.0):
    """Poll fn() until it is true, at most timeout seconds; record the outcome."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        try:
            value = fn()
        except (OSError, RuntimeError, KeyError, TypeError):
            value = None
        if value:
            check(True, what)
            return True
        time.sleep(0.1)
    check(False, "%s (timed out after %.0fs; last %r)" % (what, timeout, value))
    return False


def seed_eu(eu):
    sql(eu, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, "
            "avatar BLOB)")
    sql(eu, "CREATE TABLE orders_2024 (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES "
            "users(id), amount INTEGER)")
    sql(eu, "CREATE TABLE secrets (id INTEGER PRIMARY KEY, v TEXT)")  # not followed
    for start in range(1, USERS + 1, 50):
        stmts = [{"sql": "INSERT INTO users (id, name, score, avatar) VALUES (?, ?, ?, ?)",
                  "params": [i, "user-%d" % i, i / 4.0, {"__sirannon_blob": "%04X" % i}]}
                 for i in range(start, min(start + 50, USERS + 1))]
        st, resp, _ = eu.post("/db/main/transaction", {"statements": stmts})
        if st != 200:
            raise RuntimeError("seed users: %s %r" % (st, resp))
    for i in range(1, ORDERS + 1):
        sql(eu, "INSERT INTO orders_2024 (id, user_id, amount) VALUES (?, ?, ?)",
            [i, i, i * 100])
    sql(eu, "INSERT INTO secrets (id, v) VALUES (1, 'x')")


def seed_us(us):
    sql(us, "CREATE TABLE items (k TEXT PRIMARY KEY, v INTEGER) WITHOUT ROWID")
    for i in range(ITEMS):
        sql(us, "INSERT INTO items (k, v) VALUES (?, ?)", ["item-%02d" % i, i])


def follower_yaml(data_dir, port, eu_port, us_port, dead_port):
    return """
node: {{ id: follower, data_dir: {data_dir} }}
log: {{ level: info }}
plugins:
  - name: http
    kind: client_transport
  - name: ws
    kind: client_transport
server:
  host: 127.0.0.1
  port: {port}
  accept_sql: true
databases:
  - id: main
    path: main.db
    sources:
      - id: eu
        url: http://127.0.0.1:{eu_port}
        tables: [users, "orders_*"]
        prefix: eu_
        page_rows: 100
        retry_initial_ms: 200
        retry_max_ms: 1000
      - id: us
        url: http://127.0.0.1:{us_port}
        database: main
        tables: [items]
        retry_initial_ms: 200
        retry_max_ms: 1000
      - id: dead
        url: http://127.0.0.1:{dead_port}
        tables: [anything]
        prefix: dead_
        retry_initial_ms: 200
        retry_max_ms: 800
""".format(data_dir=data_dir, port=port, eu_port=eu_port, us_port=us_port, dead_port=dead_port)


def log_lines(server, needle):
    return [ln for ln in server.read_log().splitlines() if needle in ln]


def main():
    eu = gslib.Server(extra_plugins=WS_PLUGIN)
    us = gslib.Server(extra_plugins=WS_PLUGIN)
    follower = None
    tmp = None
    try:
        eu.start()
        us.start()
        seed_eu(eu)
        seed_us(us)

        dead_port = free_port()  # nothing listens there
        tmp = tempfile.mkdtemp(prefix="gs-it-follower-")
        fport = free_port()
        follower = gslib.Server(yaml_text=follower_yaml(os.path.join(tmp, "data"), fport,
                                                        eu.port, us.port, dead_port),
                                port=fport)
        t0 = time.time()
        follower.start()
        check(time.time() - t0 < 20, "the follower starts while a source's remote is down")

        # bootstrap: rows land under their local names (prefix eu_, none for us)
        wait_for("eu users copied into eu_users",
                 lambda: scalar(follower, "SELECT count(*) AS n FROM eu_users") == USERS)
        wait_for("eu orders_2024 copied into eu_orders_2024 (pattern orders_*)",
                 lambda: scalar(follower, "SELECT count(*) AS n FROM eu_orders_2024") == ORDERS)
        wait_for("us items copied into items (no prefix)",
                 lambda: scalar(follower, "SELECT count(*) AS n FROM items") == ITEMS)
        check(query(follower, "SELECT count(*) AS n FROM eu_secrets") is None,
              "a table the patterns do not name is not followed")
        row = query(follower, "SELECT id, name, score, avatar FROM eu_users WHERE id = 7")
        check(row == [{"id": 7, "name": "user-7", "score": 1.75,
                       "avatar": {"__sirannon_blob": "0007"}}],
              "values copied exactly (text, real, blob): %r" % (row,))

        # a subscriber on the follower sees the changes a source applies
        ws = WSClient.connect("127.0.0.1", fport, "/db/main")
        ws.send_json({"type": "subscribe", "id": "s1", "table": "eu_users"})
        sub = ws.recv_json(timeout=10)
        check(sub.get("type") == "subscribed", "subscribed on the follower: %r" % (sub,))

        # follow: inserts, updates and deletes on the remotes arrive
        sql(eu, "INSERT INTO users (id, name) VALUES (1000, 'new-eu')")
        sql(eu, "UPDATE users SET name = 'renamed' WHERE id = 1")
        sql(eu, "DELETE FROM orders_2024 WHERE user_id = 2")
        sql(eu, "DELETE FROM users WHERE id = 2")
        sql(eu, "INSERT INTO orders_2024 (id, user_id, amount) VALUES (500, 1000, 5)")
        sql(us, "UPDATE items SET v = 100 WHERE k = 'item-03'")
        wait_for("an insert on eu reaches the follower",
                 lambda: scalar(follower, "SELECT name FROM eu_users WHERE id = 1000") == "new-eu",
                 timeout=30)
        wait_for("an update on eu reaches the follower",
                 lambda: scalar(follower, "SELECT name FROM eu_users WHERE id = 1") == "renamed",
                 timeout=30)
        wait_for("a delete on eu reaches the follower",
                 lambda: scalar(follower, "SELECT count(*) AS n FROM eu_users WHERE id = 2") == 0,
                 timeout=30)
        wait_for("a delete on the pattern table reaches the follower",
                 lambda: scalar(follower, "SELECT count(*) AS n FROM eu_orders_2024 "
                                "WHERE user_id = 2") == 0, timeout=30)
        wait_for("the pattern table follows too",
                 lambda: scalar(follower, "SELECT amount FROM eu_orders_2024 WHERE id = 500") == 5,
                 timeout=30)
        wait_for("an update on us reaches the follower",
                 lambda: scalar(follower, "SELECT v FROM items WHERE k = 'item-03'") == 100,
                 timeout=30)
        seen = []
        deadline = time.time() + 15
        while time.time() < deadline and not any(
                e.get("row", {}).get("id") == 1000 for e in seen):
            try:
                msg = ws.recv_json(timeout=max(0.1, deadline - time.time()))
            except Exception:  # noqa: BLE001 - a timeout ends the wait
                break
            if msg.get("type") == "change":
                seen.append(msg.get("event", {}))
        check(any(e.get("row", {}).get("id") == 1000 and e.get("type") == "insert"
                  for e in seen),
              "the follower's own change feed reports the applied insert: %r" % (seen[:3],))
        ws.close()

        # the dead source retries, alone: its state is logged once, not once per attempt
        retry_lines = [ln for ln in log_lines(follower, "source 'dead'") if "retrying" in ln]
        check(len(retry_lines) == 1,
              "the dead source logs 'retrying' once (state change), not per retry: %r"
              % (retry_lines,))
        check(retry_lines and "CONNECTION_ERROR" in retry_lines[0],
              "the dead source's log line says why: %r" % (retry_lines[:1],))
        following = [ln for ln in log_lines(follower, "source 'eu'") if "following" in ln]
        check(len(following) >= 1, "the eu source reached following")
        # /health/ready lists every source with its state and its last failure and when
        st, ready_doc, _ = follower.request("GET", "/health/ready")
        by_id = {s.get("id"): s for s in (ready_doc or {}).get("sources", [])}
        dead = by_id.get("dead", {})
        check(dead.get("state") == "retrying" and "CONNECTION_ERROR" in dead.get("lastError", "")
              and isinstance(dead.get("lastErrorAtMs"), int)
              and abs(dead["lastErrorAtMs"] / 1000.0 - time.time()) < 300,
              "the dead source reports retrying, its last error and when: %r" % (dead,))
        eu_status = by_id.get("eu", {})
        check(eu_status.get("state") == "following" and eu_status.get("lastError") == ""
              and eu_status.get("lastErrorAtMs") is None,
              "a source that never failed reports no error: %r" % (eu_status,))

        # kill -9, write while it is down, restart: it resumes without copying again
        follower.kill9()
        sql(eu, "INSERT INTO users (id, name) VALUES (2000, 'while-down')")
        sql(eu, "UPDATE users SET name = 'renamed-again' WHERE id = 1")
        sql(us, "INSERT INTO items (k, v) VALUES ('item-new', 7)")
        log_before = len(follower.read_log().splitlines())
        follower.start()
        wait_for("a write made while the follower was down arrives (eu)",
                 lambda: scalar(follower, "SELECT name FROM eu_users WHERE id = 2000")
                 == "while-down", timeout=30)
        wait_for("an update made while down arrives",
                 lambda: scalar(follower, "SELECT name FROM eu_users WHERE id = 1")
                 == "renamed-again", timeout=30)
        wait_for("a write made while the follower was down arrives (us)",
                 lambda: scalar(follower, "SELECT v FROM items WHERE k = 'item-new'") == 7,
                 timeout=30)
        check(scalar(follower, "SELECT count(*) AS n FROM eu_users") == USERS + 1 - 1 + 1,
              "no row twice, none lost (USERS + 1000 - id 2 + 2000)")
        check(scalar(follower, "SELECT count(*) AS n FROM items") == ITEMS + 1,
              "us items: no duplicates")
        after = follower.read_log().splitlines()[log_before:]
        copies = [ln for ln in after if "copying remote table" in ln]
        resumes = [ln for ln in after if "resuming table" in ln]
        check(not copies, "no table copied again after the restart: %r" % (copies,))
        check(len(resumes) == 3, "three tables resumed from their stored positions: %r"
              % (resumes,))

        # the eu remote's database is replaced (a new epoch): the source cannot resume from
        # its cursor, copies the table again, and the local copy matches the new remote
        eu.stop()
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(eu.data_dir, "main.db" + suffix)
            if os.path.exists(path):
                os.remove(path)
        log_before = len(follower.read_log().splitlines())
        eu.start()
        sql(eu, "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, "
                "avatar BLOB)")
        for i in range(1, 6):
            sql(eu, "INSERT INTO users (id, name) VALUES (?, ?)", [i, "v2-%d" % i])
        wait_for("after the remote database was replaced, the local copy is the new one",
                 lambda: query(follower, "SELECT id, name FROM eu_users ORDER BY id")
                 == [{"id": i, "name": "v2-%d" % i} for i in range(1, 6)], timeout=60)
        sql(eu, "INSERT INTO users (id, name) VALUES (6, 'v2-6')")
        wait_for("and it follows the new remote afterwards",
                 lambda: scalar(follower, "SELECT name FROM eu_users WHERE id = 6") == "v2-6",
                 timeout=30)
        after = follower.read_log().splitlines()[log_before:]
        check(any("copying remote table 'users'" in ln for ln in after),
              "the replaced table was copied again (log)")
        check(scalar(follower, "SELECT v FROM items WHERE k = 'item-new'") == 7,
              "the us source was not disturbed")

        # the remote table gains a column: the local copy gains it too (declared type and
        # default) and the rows written with it arrive, the older rows with the default
        log_before = len(follower.read_log().splitlines())
        sql(eu, "ALTER TABLE users ADD COLUMN email TEXT DEFAULT 'none'")
        sql(eu, "INSERT INTO users (id, name, email) VALUES (7, 'v2-7', 'seven@example.org')")
        sql(eu, "UPDATE users SET name = 'v2-1b' WHERE id = 1")
        wait_for("a row written with the new column arrives",
                 lambda: query(follower, "SELECT email FROM eu_users WHERE id = 7")
                 == [{"email": "seven@example.org"}], timeout=30)
        wait_for("an update of an older row arrives after it",
                 lambda: query(follower, "SELECT name, email FROM eu_users WHERE id = 1")
                 == [{"name": "v2-1b", "email": "none"}], timeout=30)
        after = follower.read_log().splitlines()[log_before:]
        check(any("local table 'eu_users' gains column 'email'" in ln for ln in after),
              "the follower says which column it added: %r" % (after[-5:],))
        check(not any("copying remote table 'users'" in ln for ln in after),
              "a new column needs no copy of the table")

        # a graceful stop with a source still retrying: prompt, clean exit, nothing leaked
        status, took = follower.stop(timeout=30)
        check(status == 0, "the follower exits 0 on SIGTERM (exit %r)" % (status,))
        check(took < 15, "the follower stops promptly with a source retrying (%.1fs)" % took)
        log = follower.read_log()
        check("AddressSanitizer" not in log and "LeakSanitizer" not in log
              and "runtime error" not in log, "no sanitizer report in the follower's log")
    finally:
        if gslib.FAILED and follower is not None:
            print("follower log (source lines):")
            for ln in log_lines(follower, "source")[-40:]:
                print("  " + ln)
        for s in (follower, eu, us):
            if s is not None:
                try:
                    s.stop()
                finally:
                    s.cleanup()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    gslib.finish()


if __name__ == "__main__":
    main()
