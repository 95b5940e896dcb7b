"""Integration smoke test under valgrind: start the server in memcheck, exercise each route
kind once, stop it with SIGTERM, and require no leaks and no memory errors. Suppressions,
each commented, live in tests/integration/valgrind.supp."""
import os
import shutil
import sys

from gslib import Server, check, finish
from wsclient import WSClient

if not shutil.which("valgrind"):
    print("valgrind is not installed (make deps installs it)")
    sys.exit(1)

supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "valgrind.supp")
vlog = "/tmp/gs-valgrind-%d.log" % os.getpid()
wrapper = ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible",
           "--errors-for-leak-kinds=definite,indirect,possible", "--error-exitcode=99",
           "--suppressions=" + supp, "--log-file=" + vlog]
srv = Server(wrapper=wrapper, extra_plugins="  - { name: ws, kind: client_transport }\n")
srv.start(timeout=120)
st, b, _ = srv.post("/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)"})
check(st == 200, "create under valgrind: %s" % b)
st, b, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO t VALUES (?, ?)", "params": [1, {"__sirannon_blob": "AB"}]})
check(st == 200, "insert: %s" % b)
st, b, _ = srv.post("/db/main/transaction", {"statements": [{"sql": "INSERT INTO t VALUES (2, NULL)"}]})
check(st == 200, "transaction: %s" % b)
st, b, _ = srv.post("/db/main/batch", {"sql": "INSERT INTO t VALUES (?, NULL)", "paramsBatch": [[3], [4]]})
check(st == 200, "batch: %s" % b)
st, b, _ = srv.post("/db/main/load", {"sql": "INSERT INTO t VALUES (?, NULL)", "paramsBatch": [[5], [6]]})
check(st == 200, "load: %s" % b)
st, b, _ = srv.post("/db/main/query", {"sql": "SELECT * FROM t"})
check(st == 200 and len(b["rows"]) == 6, "query: %s" % b)
st, b, _ = srv.post("/db/main/query", b"{broken")
check(st == 400, "bad JSON")
st, b, _ = srv.post("/db/main/query", {"sql": "SELECT * FROM nope"})
check(st == 400, "query error")
st, b, _ = srv.request("GET", "/health/ready")
check(st == 200, "ready")
# WebSocket: a query, a subscription and one change, then a clean close
ws = WSClient.connect("127.0.0.1", srv.port, "/db/main", protocols=["sirannon.v1"], timeout=60)
ws.send_json({"type": "query", "id": "q1", "sql": "SELECT count(*) AS n FROM t"})
m = ws.recv_json(60)
check(m.get("type") == "result" and m["data"] == {"rows": [{"n": 6}]}, "ws query: %s" % m)
ws.send_json({"type": "subscribe", "id": "s1", "table": "t"})
m = ws.recv_json(60)
check(m.get("type") == "subscribed", "ws subscribed: %s" % m)
st, b, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO t VALUES (7, NULL)"})
m = ws.recv_json(60)
check(m.get("type") == "change" and m["event"]["row"] == {"id": 7, "v": None} and m["event"].get("txEnd"),
      "ws change: %s" % m)
ws.close()
rc, took = srv.stop(timeout=60)
with open(vlog) as f:
    report = f.read()
check(rc == 0, "valgrind exit status %s (99 = errors or leaks)" % rc)
check("ERROR SUMMARY: 0 errors" in report, "valgrind error summary clean")
if rc != 0:
    print(report[-6000:])
os.unlink(vlog)
srv.cleanup()
finish()
