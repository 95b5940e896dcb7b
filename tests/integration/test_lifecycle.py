"""SIGTERM/SIGINT: in-flight requests finish, the process exits 0 within 5 s, the databases
are checkpointed and closed (no WAL content left), and the data is there after a restart."""
import http.client
import json
import os
import signal
import threading
import time

from gslib import Server, check, finish

for sig in (signal.SIGTERM, signal.SIGINT):
    srv = Server()
    srv.start()
    srv.post("/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY)"})
    results = []

    def writer():
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        for i in range(100000):
            try:
                conn.request("POST", "/db/main/execute",
                             json.dumps({"sql": "INSERT INTO t (id) VALUES (?)", "params": [i]}),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                body = json.loads(r.read() or b"null")
                results.append((r.status, body, i))
            except (OSError, http.client.HTTPException):
                break

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.time() + 5
    while len(results) < 200 and time.time() < deadline:
        time.sleep(0.01)
    t0 = time.time()
    srv.signal(sig)
    srv.proc.wait(timeout=10)
    took = time.time() - t0
    t.join(timeout=15)
    srv.log.close()
    check(srv.proc.returncode == 0, "%s: exit status %s" % (sig.name, srv.proc.returncode))
    check(took < 5.0, "%s: stopped in %.2f s" % (sig.name, took))
    bad = [r for r in results if r[0] not in (200, 503)]
    check(not bad, "%s: answers during shutdown are 200 or 503 SHUTDOWN: %s" % (sig.name, bad[:3]))
    shut = [r for r in results if r[0] == 503]
    check(all(r[1]["error"]["code"] == "SHUTDOWN" for r in shut), "%s: 503s carry SHUTDOWN" % sig.name)
    acked = [r[2] for r in results if r[0] == 200]
    print("%s: %d writes acknowledged, %d answered 503 SHUTDOWN, stopped in %.2f s" %
          (sig.name, len(acked), len(shut), took), flush=True)
    wal = os.path.join(srv.data_dir, "main.db-wal")
    check(not os.path.exists(wal) or os.path.getsize(wal) == 0, "%s: WAL checkpointed on close" % sig.name)
    log = srv.read_log()
    check("stopped cleanly" in log, "%s: log says it stopped cleanly" % sig.name)
    srv2 = Server(data_dir=srv.data_dir)
    srv2.start()
    st, b, _ = srv2.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"})
    check(b["rows"][0]["n"] >= len(acked), "%s: %d acknowledged, %s present" % (sig.name, len(acked), b))
    srv2.stop()
    srv2.cleanup()
    srv.cleanup()

finish()
