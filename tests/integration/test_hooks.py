"""The ABI 1.2 hook events through the real server: sql_allowlist admits listed statements
(normalised) and refuses the rest with 403 FORBIDDEN_SQL, registered operations included;
the example hook's log_queries proves after_query (with duration, never SQL),
database_open and database_close are called; its deny_open proves before_connect can keep a
tenant database from opening."""
import re

from gslib import Server, check, error_code, finish

PLUGINS = """
  - name: audit
    plugin: example
    kind: hook
    config: { log_queries: true, deny_open: [secret] }
  - name: allowlist
    plugin: sql_allowlist
    kind: hook
    config:
      databases:
        - database: main
          statements:
            - "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"
            - "INSERT INTO items (id, name) VALUES (?, ?)"
            - "SELECT id, name FROM items ORDER BY id"
            - "SELECT id, name FROM items WHERE id = :id"
            - "SELECT * FROM no_such_table"
        - database: "*"
          statements: ["SELECT 1 AS x"]
"""
SERVER = """
  operations:
    - { database: main, name: getItem, kind: read, args: [id],
        sql: "select id, name from ITEMS where id = :id" }
    - { database: main, name: countItems, kind: read, sql: "SELECT count(*) AS n FROM items" }
"""
TENANTS = "tenants: { dir: tenants, create: true }\n"
UNLISTED = "SELECT name FROM items WHERE name LIKE 'zz_unlisted%'"

srv = Server(extra_plugins=PLUGINS, extra_server=SERVER, extra_databases=TENANTS)
try:
    srv.start()
    st, b, _ = srv.post("/db/main/execute",
                        {"sql": "create table ITEMS (id integer primary key, name text);"})
    check(st == 200, "a listed statement runs (case and ';' normalised): %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/execute",
                        {"sql": "INSERT  INTO items (id, name)\n VALUES (?, ?)", "params": [1, "a"]})
    check(st == 200 and b.get("changes") == 1, "whitespace normalised: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/batch", {"sql": "INSERT INTO items (id, name) VALUES (?, ?)",
                                           "paramsBatch": [[2, "b"], [3, "c"]]})
    check(st == 200, "a listed batch runs: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT id, name FROM items ORDER BY id"})
    check(st == 200 and [r["id"] for r in b["rows"]] == [1, 2, 3], "listed query: %s %s" % (st, b))

    st, b, _ = srv.post("/db/main/query", {"sql": UNLISTED})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL", "unlisted refused: %s %s" % (st, b))
    msg = (b or {}).get("error", {}).get("message", "")
    check("'main'" in msg and "zz_unlisted" not in msg and "LIKE" not in msg,
          "the message names the database, never the SQL: %s" % msg)
    st, b, _ = srv.post("/db/main/execute", {"sql": "DELETE FROM items"})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL", "unlisted write refused: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/transaction", {"statements": [
        {"sql": "INSERT INTO items (id, name) VALUES (?, ?)", "params": [9, "z"]},
        {"sql": "DELETE FROM items"}]})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL", "one unlisted statement refuses the "
          "whole transaction: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT id, name FROM items ORDER BY id"})
    check(st == 200 and len(b["rows"]) == 3, "nothing of the refused transaction ran: %s" % b)

    st, b, _ = srv.post("/db/main/query/getItem", {"args": {"id": 2}})
    check(st == 200 and b == {"rows": [{"id": 2, "name": "b"}]},
          "a registered operation whose statement is listed runs: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query/countItems", {})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL",
          "registered operations are checked too: %s %s" % (st, b))

    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT * FROM no_such_table"})
    check(st == 400, "a listed statement that fails still fails: %s %s" % (st, b))

    st, b, _ = srv.post("/db/t1/query", {"sql": "SELECT 1 AS x"})
    check(st == 200 and b == {"rows": [{"x": 1}]}, "the '*' list covers tenants: %s %s" % (st, b))
    st, b, _ = srv.post("/db/t1/query", {"sql": "SELECT 2 AS x"})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL", "'*' list refuses: %s %s" % (st, b))
    st, b, _ = srv.post("/db/secret/query", {"sql": "SELECT 1 AS x"})
    check(st == 403 and error_code(b) == "FORBIDDEN",
          "before_connect keeps 'secret' from opening: %s %s" % (st, b))
    st, b, _ = srv.request("GET", "/health/ready")
    ids = sorted(d["id"] for d in b["databases"])
    check(ids == ["main", "t1"], "'secret' was never registered: %s" % ids)
finally:
    code, _ = srv.stop()
    log = srv.read_log()
    srv.cleanup()

check(code == 0, "clean exit: %s" % code)
lines = [l for l in log.splitlines() if "after_query" in l]
ok_writes = [l for l in lines if "database=main kind=write result=ok" in l]
ok_reads = [l for l in lines if "database=main kind=read result=ok" in l]
failed = [l for l in lines if "database=main kind=read result=failed" in l]
check(len(ok_writes) == 3, "after_query after each write operation (execute, execute, batch): "
      "%d\n%s" % (len(ok_writes), "\n".join(lines)))
check(len(ok_reads) >= 3 and len(failed) == 1, "after_query after reads and the failed one:\n%s"
      % "\n".join(lines))
check(all(re.search(r"duration_ms=\d+\.\d{3}$", l) for l in lines), "every line has a duration")
check(not any("database=main" in l and "kind=write result=failed" in l for l in lines),
      "refused statements never ran, so no after_query for them")
check(any("database=t1 kind=read result=ok" in l for l in lines), "tenant after_query")
for event, db in (("database_open", "main"), ("database_open", "t1"),
                  ("database_close", "main"), ("database_close", "t1")):
    check("%s database=%s" % (event, db) in log, "%s for %s logged" % (event, db))
check("database=secret" not in log, "no event for the database that never opened")
check(log.index("database_open database=main") < log.index("database_close database=main"),
      "open before close")
for text in ("items", "zz_unlisted", "no_such_table", "SELECT"):
    check(text not in log, "no SQL in the log (%s)" % text)

# allow_registered: true lets registered operations run unlisted; request SQL is still checked.
PLUGINS2 = """
  - name: allowlist
    plugin: sql_allowlist
    kind: hook
    config:
      allow_registered: true
      databases:
        - { database: main, statements: ["CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"] }
"""
with Server(extra_plugins=PLUGINS2, extra_server=SERVER) as srv2:
    st, b, _ = srv2.post("/db/main/execute",
                         {"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)"})
    check(st == 200, "listed: %s %s" % (st, b))
    st, b, _ = srv2.post("/db/main/query/countItems", {})
    check(st == 200 and b == {"rows": [{"n": 0}]},
          "allow_registered: an unlisted registered operation runs: %s %s" % (st, b))
    st, b, _ = srv2.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM items"})
    check(st == 403 and error_code(b) == "FORBIDDEN_SQL",
          "the same SQL sent in the request is still checked: %s %s" % (st, b))
finish()
