"""Every route and error of the Sirannon HTTP API (spec 05-server) against a real
gatestream process on loopback, plus bad input of every kind: each gets the spec's error and
the server keeps serving."""
import json
import socket

from gslib import Server, check, error_code, finish


def expect_error(srv, method, path, body, status, code, what, headers=None):
    st, b, _ = srv.request(method, path, body, headers=headers)
    check(st == status and error_code(b) == code,
          "%s: want %d %s, got %d %s" % (what, status, code, st, b))
    check(isinstance(b, dict) and isinstance(b.get("error", {}).get("message"), str),
          "%s: error envelope has a message" % what)


def still_serving(srv, what):
    st, b, _ = srv.request("GET", "/health")
    check(st == 200 and b == {"status": "ok"}, "still serving after %s" % what)


OPS = """
  operations:
    - { database: main, name: getItem, kind: read, sql: "SELECT id, name FROM items WHERE id = :id", args: [id] }
    - { database: main, name: allItems, kind: read, sql: "SELECT id, name FROM items ORDER BY id" }
    - { database: main, name: addItem, kind: write, args: [id, name],
        statements: [ { sql: "INSERT INTO items (id, name) VALUES (:id, :name)" },
                      { sql: "UPDATE counters SET n = n + 1 WHERE k = 'items'" } ] }
    - { database: main, name: myItems, kind: read, sql: "SELECT id FROM items WHERE name = :owner",
        from_identity: { owner: name } }
  cors:
    enabled: true
    origins: ["https://a.example", "https://b.example"]
"""

with Server(extra_server=OPS) as srv:
    # --- health and capabilities ---
    st, b, _ = srv.request("GET", "/health")
    check(st == 200 and b == {"status": "ok"}, "GET /health")
    st, b, _ = srv.request("GET", "/health/ready")
    check(st == 200 and b.get("status") == "ok" and
          b.get("databases") == [{"id": "main", "readOnly": False, "closed": False}],
          "GET /health/ready: %s" % b)
    st, b, _ = srv.request("GET", "/capabilities")
    caps = b.get("capabilities", [])
    check(st == 200 and "query.sql" in caps and "query.named" in caps,
          "capabilities announce query.sql and query.named: %s" % b)
    digest = (b.get("registry") or {}).get("digest", "")
    check(len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
          "registry.digest is 64 lowercase hex: %r" % digest)

    # --- statements ---
    st, b, _ = srv.post("/db/main/execute",
                        {"sql": "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, data BLOB, big INTEGER, r REAL)"})
    check(st == 200 and b == {"changes": 0, "lastInsertRowId": 0}, "create table: %s %s" % (st, b))
    srv.post("/db/main/execute", {"sql": "CREATE TABLE counters (k TEXT PRIMARY KEY, n INTEGER)"})
    srv.post("/db/main/execute", {"sql": "INSERT INTO counters VALUES ('items', 0)"})
    st, b, _ = srv.post("/db/main/execute",
                        {"sql": "INSERT INTO items (id, name, data, big, r) VALUES (?, ?, ?, ?, ?)",
                         "params": [1, "one", {"__sirannon_blob": "00FF10"},
                                    {"__sirannon_int": "9223372036854775807"}, 1.5]})
    check(st == 200 and b == {"changes": 1, "lastInsertRowId": 1}, "insert with envelopes: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT * FROM items WHERE id = :id", "params": {"id": 1}})
    check(st == 200 and b == {"rows": [{"id": 1, "name": "one", "data": {"__sirannon_blob": "00FF10"},
                                          "big": {"__sirannon_int": "9223372036854775807"}, "r": 1.5}]},
          "query returns tagged values: %s" % b)
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 9007199254740991 AS a, 9007199254740992 AS b, -9007199254740992 AS c, x'' AS e"})
    check(b == {"rows": [{"a": 9007199254740991, "b": {"__sirannon_int": "9007199254740992"},
                          "c": {"__sirannon_int": "-9007199254740992"}, "e": {"__sirannon_blob": ""}}]},
          "safe-integer boundary and empty blob: %s" % b)
    st, b, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO items (id, name) VALUES (?, ?)",
                                             "params": [{"__sirannon_int": "9007199254740993"}, "big"]})
    check(st == 200 and b.get("lastInsertRowId") == "9007199254740993",
          "unsafe lastInsertRowId is a decimal string: %s" % b)
    st, b, _ = srv.post("/db/main/transaction", {"statements": [
        {"sql": "INSERT INTO items (id, name) VALUES (2, 'two')"},
        {"sql": "INSERT INTO items (id, name) VALUES (?, ?)", "params": [3, "three"]}]})
    check(st == 200 and b == {"results": [{"changes": 1, "lastInsertRowId": 2},
                                          {"changes": 1, "lastInsertRowId": 3}]}, "transaction: %s" % b)
    st, b, _ = srv.post("/db/main/transaction", {"statements": [
        {"sql": "INSERT INTO items (id, name) VALUES (4, 'four')"},
        {"sql": "INSERT INTO items (id, name) VALUES (2, 'dup')"}]})
    check(st == 400 and error_code(b) in ("QUERY_ERROR", "TRANSACTION_ERROR"), "failing transaction: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM items WHERE id = 4"})
    check(b == {"rows": [{"n": 0}]}, "failed transaction rolled back: %s" % b)
    st, b, _ = srv.post("/db/main/batch", {"sql": "INSERT INTO items (id, name) VALUES (?, ?)",
                                           "paramsBatch": [[10, "a"], [11, "b"], {"1": 12, "2": "c"}]})
    # named keys "1"/"2" are not positional names; accept either success or a clear error
    check(st in (200, 400), "batch with mixed params answers: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/batch", {"sql": "INSERT INTO items (id, name) VALUES (?, ?)",
                                           "paramsBatch": [[20, "a"], [21, "b"]]})
    check(st == 200 and b == {"results": [{"changes": 1, "lastInsertRowId": 20},
                                          {"changes": 1, "lastInsertRowId": 21}]}, "batch: %s" % b)
    st, b, _ = srv.post("/db/main/load", {"sql": "INSERT INTO items (id, name) VALUES (?, ?)",
                                          "paramsBatch": [[100 + i, "l%d" % i] for i in range(50)],
                                          "durability": "off", "checkpoint": True})
    check(st == 200 and b == {"rowsLoaded": 50, "changes": 50}, "load: %s" % b)
    st, b, _ = srv.post("/db/main/query", {"sql": "PRAGMA synchronous"})
    check(st == 200, "pragma read: %s" % b)

    # --- write and read concerns on a single node ---
    for lvl in ("local", "majority", "all"):
        st, b, _ = srv.post("/db/main/execute", {"sql": "UPDATE items SET name = name WHERE id = 1",
                                                 "writeConcern": {"level": lvl, "timeoutMs": 1000}})
        check(st == 200, "writeConcern %s honoured: %s" % (lvl, b))
    for lvl in ("local", "majority", "linearizable"):
        st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 1 AS x", "readConcern": {"level": lvl}})
        check(st == 200 and b == {"rows": [{"x": 1}]}, "readConcern %s: %s" % (lvl, b))
    expect_error(srv, "POST", "/db/main/execute", {"sql": "SELECT 1", "writeConcern": {"level": "most"}},
                 400, "INVALID_REQUEST", "bad writeConcern level")
    expect_error(srv, "POST", "/db/main/execute", {"sql": "SELECT 1", "writeConcern": {"level": "all", "timeoutMs": -5}},
                 400, "INVALID_REQUEST", "negative timeoutMs")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT 1", "readConcern": {"level": "strong"}},
                 400, "INVALID_REQUEST", "bad readConcern")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT 1", "readConcern": "local"},
                 400, "INVALID_REQUEST", "readConcern not an object")

    # --- registered operations ---
    st, b, _ = srv.post("/db/main/execute/addItem", {"args": {"id": 50, "name": "fifty"}})
    check(st == 200 and b == {"results": [{"changes": 1, "lastInsertRowId": 50},
                                          {"changes": 1, "lastInsertRowId": 50}]},
          "named write returns one result per statement: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query/getItem", {"args": {"id": 50}})
    check(st == 200 and b == {"rows": [{"id": 50, "name": "fifty"}]}, "named read: %s" % b)
    st, b, _ = srv.request("POST", "/db/main/query/allItems", b"")
    check(st == 200 and isinstance(b.get("rows"), list), "argless named read accepts an empty body: %s" % b)
    st, b, _ = srv.request("POST", "/db/main/query/%67etItem", {"args": {"id": 50}})
    check(st == 200, "operation name is percent-decoded: %s" % b)
    expect_error(srv, "POST", "/db/main/query/nope", {}, 404, "UNKNOWN_QUERY", "unknown read")
    expect_error(srv, "POST", "/db/main/execute/getItem", {"args": {"id": 1}}, 404, "UNKNOWN_QUERY",
                 "write route does not resolve a read name")
    expect_error(srv, "POST", "/db/main/query/getItem", {}, 400, "MISSING_ARGUMENT", "missing argument")
    expect_error(srv, "POST", "/db/main/query/getItem", {"args": {"id": 1, "x": 2}}, 400,
                 "ARGUMENT_NOT_ALLOWED", "undeclared argument")
    expect_error(srv, "POST", "/db/main/query/myItems", {"args": {"owner": "x"}}, 400,
                 "ARGUMENT_NOT_ALLOWED", "argument filled from identity")
    expect_error(srv, "POST", "/db/main/query/myItems", {}, 401, "IDENTITY_REQUIRED",
                 "fromIdentity without identity")
    expect_error(srv, "POST", "/db/main/query/getItem", {"args": [1]}, 400, "INVALID_REQUEST",
                 "args not an object")

    # --- CORS ---
    st, b, h = srv.request("OPTIONS", "/db/main/query", None, headers={"Origin": "https://a.example"})
    check(st == 204 and h.get("access-control-allow-origin") == "https://a.example" and
          "POST" in h.get("access-control-allow-methods", "") and
          h.get("access-control-max-age") == "86400" and h.get("vary") == "Origin",
          "preflight: %s %s" % (st, h))
    st, b, h = srv.request("GET", "/health", None, headers={"Origin": "https://evil.example"})
    check("access-control-allow-origin" not in h and h.get("vary") == "Origin",
          "unlisted origin is not echoed: %s" % h)
    st, b, h = srv.request("GET", "/health", None, headers={"Origin": "https://b.example"})
    check(h.get("access-control-allow-origin") == "https://b.example", "listed origin echoed: %s" % h)

    # --- errors of every kind ---
    expect_error(srv, "GET", "/nope", None, 404, "NOT_FOUND", "unknown path")
    expect_error(srv, "GET", "/db/main/query", None, 404, "NOT_FOUND", "wrong method")
    expect_error(srv, "POST", "/db/main/frobnicate", {}, 404, "NOT_FOUND", "unknown db action")
    expect_error(srv, "POST", "/db/nope/query", {"sql": "SELECT 1"}, 404, "DATABASE_NOT_FOUND", "unknown db")
    expect_error(srv, "POST", "/db/..%2F..%2Fetc%2Fpasswd/query", {"sql": "SELECT 1"}, 404,
                 "DATABASE_NOT_FOUND", "db id with ../")
    expect_error(srv, "POST", "/db/ma%01in/query", {"sql": "SELECT 1"}, 404, "DATABASE_NOT_FOUND",
                 "db id with a control character")
    expect_error(srv, "POST", "/db/ma%00in/query", {"sql": "SELECT 1"}, 404, "NOT_FOUND", "db id with NUL")
    expect_error(srv, "POST", "/db/main/query", b"", 400, "EMPTY_BODY", "empty body")
    expect_error(srv, "POST", "/db/main/query", b"   ", 400, "EMPTY_BODY", "whitespace body")
    expect_error(srv, "POST", "/db/main/query", b"{\"sql\": \"SELECT 1\"", 400, "INVALID_JSON", "truncated JSON")
    expect_error(srv, "POST", "/db/main/query", b"{\"sql\": \"\xff\xfe\"}", 400, "INVALID_JSON", "invalid UTF-8")
    expect_error(srv, "POST", "/db/main/query", b"[1,2]", 400, "INVALID_REQUEST", "array body")
    expect_error(srv, "POST", "/db/main/query", b"\"str\"", 400, "INVALID_REQUEST", "string body")
    expect_error(srv, "POST", "/db/main/query", {"sql": 5}, 400, "INVALID_REQUEST", "sql not a string")
    expect_error(srv, "POST", "/db/main/query", {"sql": ""}, 400, "INVALID_REQUEST", "empty sql")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": 5}, 400, "INVALID_REQUEST", "params number")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"a": 1}]}, 400, "INVALID_REQUEST",
                 "object parameter")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [[1]]}, 400, "INVALID_REQUEST",
                 "array parameter")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_int": "12", "x": 1}]},
                 400, "INVALID_REQUEST", "envelope with extra keys")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_int": 12}]},
                 400, "INVALID_REQUEST", "int envelope with a number")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_int": "99999999999999999999"}]},
                 400, "INVALID_REQUEST", "int envelope overflow")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_int": "1.5"}]},
                 400, "INVALID_REQUEST", "int envelope not an integer")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_blob": "ABC"}]},
                 400, "INVALID_REQUEST", "blob envelope odd length")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?", "params": [{"__sirannon_blob": "ZZ"}]},
                 400, "INVALID_REQUEST", "blob envelope not hex")
    st, b, _ = srv.request("POST", "/db/main/query", b"{\"sql\": \"SELECT ? AS v\", \"params\": [123456789012345678901234567890]}")
    check(st == 400 and error_code(b) in ("INVALID_JSON", "INVALID_REQUEST"), "huge JSON number: %s %s" % (st, b))
    st, b, _ = srv.request("POST", "/db/main/query", b"{\"sql\": \"SELECT ? AS v\", \"params\": [1e400]}")
    check(st == 400, "1e400: %s %s" % (st, b))
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELEC nonsense"}, 400, "QUERY_ERROR", "syntax error")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT * FROM missing_table"}, 400, "QUERY_ERROR", "no such table")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT 1; DROP TABLE items"}, 400, "QUERY_ERROR",
                 "two statements in one request")
    expect_error(srv, "POST", "/db/main/query", {"sql": "INSERT INTO items (id) VALUES (999)"}, 400, "QUERY_ERROR",
                 "write through the read route")
    expect_error(srv, "POST", "/db/main/query", {"sql": "SELECT ?, ?", "params": [1]}, 400, "QUERY_ERROR",
                 "too few parameters")
    for sql in ["SELECT * FROM _sirannon_meta", "CREATE TABLE _sirannon_x (a)", "SELECT * FROM \"_SIRANNON_changes\"",
                "ATTACH DATABASE '/tmp/x.db' AS x", "DETACH DATABASE x", "PRAGMA writable_schema = 1",
                "PRAGMA writable_schema", "DELETE FROM sqlite_master", "UPDATE sqlite_sequence SET seq = 0"]:
        route = "/db/main/query" if sql.startswith("SELECT") else "/db/main/execute"
        expect_error(srv, "POST", route, {"sql": sql}, 403, "FORBIDDEN_SQL", "forbidden: " + sql)
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'items'"})
    check(st == 200 and b == {"rows": [{"name": "items"}]}, "sqlite_master is readable: %s" % b)
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT '_sirannon' AS s"})
    check(st == 200, "a string literal '_sirannon' is not an identifier: %s" % b)
    expect_error(srv, "POST", "/db/main/transaction", {"statements": []}, 400, "INVALID_REQUEST", "empty transaction")
    expect_error(srv, "POST", "/db/main/transaction", {"statements": "x"}, 400, "INVALID_REQUEST", "statements not array")
    expect_error(srv, "POST", "/db/main/transaction", {"statements": [5]}, 400, "INVALID_REQUEST", "statement not object")
    expect_error(srv, "POST", "/db/main/batch", {"sql": "SELECT 1", "paramsBatch": []}, 400, "INVALID_REQUEST", "empty batch")
    expect_error(srv, "POST", "/db/main/batch", {"sql": "SELECT ?", "paramsBatch": [1]}, 400, "INVALID_REQUEST",
                 "batch entry not array")
    expect_error(srv, "POST", "/db/main/load", {"sql": "INSERT INTO items (id) VALUES (?)", "paramsBatch": [[1000]],
                                               "durability": "fast"}, 400, "INVALID_DURABILITY", "bad durability")
    expect_error(srv, "POST", "/db/main/load", {"sql": "INSERT INTO items (id) VALUES (?)", "paramsBatch": []},
                 400, "INVALID_REQUEST", "empty load")
    expect_error(srv, "POST", "/db/main/changes", {"batch": {}}, 501, "SYNC_UNSUPPORTED", "device sync not served")
    expect_error(srv, "POST", "/db/main/backup", {}, 501, "BACKUP_UNSUPPORTED", "backups not configured")
    expect_error(srv, "POST", "/db/nope/backup", {}, 404, "DATABASE_NOT_FOUND", "backup of unknown db")
    expect_error(srv, "POST", "/db/main/backup/restore", {}, 403, "BACKUP_RESTORE_NOT_ACCEPTED", "restore refused")
    st, b, _ = srv.request("GET", "/db/main/backup/restore")
    check(st == 200 and b == {"state": "idle"}, "restore status idle: %s" % b)
    expect_error(srv, "GET", "/db/main/cluster", None, 404, "NOT_FOUND", "cluster status not configured")

    # --- limits ---
    big = b"{\"sql\": \"SELECT 1\", \"pad\": \"" + b"x" * (10 * 1024 * 1024) + b"\"}"
    try:
        st, b, _ = srv.request("POST", "/db/main/query", big)
        check(st == 413 and error_code(b) == "PAYLOAD_TOO_LARGE", "10 MB body: %s" % st)
    except (ConnectionResetError, BrokenPipeError):
        check(True, "10 MB body: the server closed after answering")
    # a body over the limit without Content-Length (chunked)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /db/main/query HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              b"Content-Type: application/json\r\n\r\n")
    chunk = b"y" * 65536
    try:
        for _ in range(40):
            s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        s.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            part = s.recv(4096)
            if not part:
                break
            data += part
    except OSError:
        pass
    s.close()
    check(data.startswith(b"HTTP/1.1 413"), "chunked body over the limit gets 413: %r" % data[:40])
    still_serving(srv, "bad input")

    # --- keep-alive: many requests on one connection ---
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    ok = 0
    for i in range(50):
        conn.request("POST", "/db/main/query", json.dumps({"sql": "SELECT ? AS i", "params": [i]}),
                     {"Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status == 200 and json.loads(r.read()) == {"rows": [{"i": i}]}:
            ok += 1
    conn.close()
    check(ok == 50, "keep-alive: 50 requests on one connection (%d ok)" % ok)

# --- acceptSql off ---
with Server(accept_sql=False) as srv:
    for route in ("query", "execute", "transaction", "batch", "load"):
        expect_error(srv, "POST", "/db/main/" + route, {"sql": "SELECT 1"}, 403, "SQL_NOT_ACCEPTED",
                     "acceptSql false refuses /" + route)
    st, b, _ = srv.request("GET", "/capabilities")
    check(st == 200 and "query.sql" not in b.get("capabilities", []) and "registry" not in b,
          "capabilities without query.sql: %s" % b)
    expect_error(srv, "POST", "/db/main/nope", {}, 404, "NOT_FOUND", "unknown route still NOT_FOUND")

# --- read-only database ---
with Server(extra_databases="  - { id: ro, path: main.db, read_only: true }\n") as srv:
    srv.post("/db/main/execute", {"sql": "CREATE TABLE t (a)"})
    expect_error(srv, "POST", "/db/ro/execute", {"sql": "INSERT INTO t VALUES (1)"}, 403, "READ_ONLY",
                 "write on a read-only database")
    st, b, _ = srv.post("/db/ro/query", {"sql": "SELECT count(*) AS n FROM t"})
    check(st == 200 and b == {"rows": [{"n": 0}]}, "read on a read-only database: %s %s" % (st, b))
    st, b, _ = srv.request("GET", "/health/ready")
    check({"id": "ro", "readOnly": True, "closed": False} in b.get("databases", []), "ready lists ro: %s" % b)

finish()
