"""Authentication and registered operations through the real server: auth_token chained as
the authenticate hook, the bypass of /health, /health/ready and /capabilities, the spec's
refusal statuses, identity feeding fromIdentity, and the example hook chained after it."""
import os

from gslib import Server, check, error_code, finish

os.environ["GS_IT_TOKEN_OPS"] = "ops-secret-token"
PLUGINS = """
  - name: tokens
    plugin: auth_token
    kind: hook
    config:
      tokens:
        - { token: app-token-1, name: alice, databases: [main], claims: { tenant: 7 } }
        - { token_env: GS_IT_TOKEN_OPS, name: ops, databases: ["*"] }
        - { token: other-token, name: bob, databases: [other] }
  - name: guard
    plugin: example
    kind: hook
    config: { deny_words: [drop] }
"""
SERVER = """
  operations:
    - { database: main, name: mine, kind: read, from_identity: { tenant: tenant },
        sql: "SELECT id FROM orders WHERE tenant = :tenant ORDER BY id" }
"""
APP = {"Authorization": "Bearer app-token-1"}
OPS = {"Authorization": "Bearer ops-secret-token"}

with Server(extra_plugins=PLUGINS, extra_server=SERVER,
            extra_databases="  - { id: other, path: other.db }\n") as srv:
    for path in ("/health", "/health/ready", "/capabilities"):
        st, b, _ = srv.request("GET", path)
        check(st == 200, "%s needs no credentials: %s" % (path, st))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 1 AS x"})
    check(st == 401 and error_code(b) == "UNAUTHORIZED", "no token: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 1 AS x"}, headers={"Authorization": "Bearer nope"})
    check(st == 401 and error_code(b) == "UNAUTHORIZED", "unknown token: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 1 AS x"}, headers={"Authorization": "Basic abc"})
    check(st == 401, "wrong scheme: %s" % st)
    st, b, _ = srv.post("/db/other/query", {"sql": "SELECT 1 AS x"}, headers=APP)
    check(st == 403 and error_code(b) == "FORBIDDEN", "token not allowed on that database: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT 1 AS x"}, headers=APP)
    check(st == 200 and b == {"rows": [{"x": 1}]}, "allowed token: %s %s" % (st, b))
    st, b, _ = srv.post("/db/other/query", {"sql": "SELECT 1 AS x"}, headers=OPS)
    check(st == 200, "token from the environment reaches every database: %s %s" % (st, b))
    st, b, _ = srv.post("/db/nope/query", {"sql": "SELECT 1"}, headers=OPS)
    check(st == 404 and error_code(b) == "DATABASE_NOT_FOUND", "authenticated, unknown db: %s" % b)
    st, b, _ = srv.post("/db/main/nope", {}, headers=APP)
    check(st == 404 and error_code(b) == "NOT_FOUND", "unknown route: %s" % b)
    st, b, _ = srv.request("GET", "/db/main/cluster", headers={})
    check(st == 401, "cluster route is authenticated first: %s" % st)
    # the second hook in the chain denies statements after authentication
    srv.post("/db/main/execute", {"sql": "CREATE TABLE orders (id INTEGER PRIMARY KEY, tenant INTEGER)"}, headers=OPS)
    st, b, _ = srv.post("/db/main/execute", {"sql": "DROP TABLE orders"}, headers=OPS)
    check(st == 403 and error_code(b) == "HOOK_DENIED", "chained beforeQuery hook denies: %s %s" % (st, b))
    srv.post("/db/main/batch", {"sql": "INSERT INTO orders (id, tenant) VALUES (?, ?)",
                                "paramsBatch": [[1, 7], [2, 8], [3, 7]]}, headers=OPS)
    st, b, _ = srv.post("/db/main/query/mine", {}, headers=APP)
    check(st == 200 and b == {"rows": [{"id": 1}, {"id": 3}]}, "identity feeds fromIdentity: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query/mine", {}, headers=OPS)
    check(st == 401 and error_code(b) == "IDENTITY_REQUIRED", "identity without the field: %s %s" % (st, b))
    st, b, _ = srv.post("/db/main/query/mine", {"args": {"tenant": 8}}, headers=APP)
    check(st == 400 and error_code(b) == "ARGUMENT_NOT_ALLOWED", "caller cannot override identity: %s" % b)
    log = srv.read_log()
    check("app-token-1" not in log and "ops-secret-token" not in log, "no token in the log")
    check("SELECT" not in log, "no SQL in the log")

finish()
