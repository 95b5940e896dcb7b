"""8 clients x 500 inserts over HTTP keep-alive: every acknowledged row is there, none lost,
none duplicated."""
import http.client
import json
import threading

from gslib import Server, check, finish

CLIENTS, PER_CLIENT = 8, 500

with Server() as srv:
    st, b, _ = srv.post("/db/main/execute", {"sql": "CREATE TABLE t (client INTEGER, i INTEGER, PRIMARY KEY (client, i))"})
    check(st == 200, "create table: %s" % b)
    acked = [0] * CLIENTS
    errors = []

    def client(c):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        for i in range(PER_CLIENT):
            conn.request("POST", "/db/main/execute",
                         json.dumps({"sql": "INSERT INTO t (client, i) VALUES (?, ?)", "params": [c, i]}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and json.loads(body).get("changes") == 1:
                acked[c] += 1
            else:
                errors.append((r.status, body[:200]))
        conn.close()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    check(not any(t.is_alive() for t in threads), "all clients finished")
    check(not errors, "no insert failed: %s" % errors[:3])
    check(sum(acked) == CLIENTS * PER_CLIENT, "acknowledged %d of %d" % (sum(acked), CLIENTS * PER_CLIENT))
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n, count(DISTINCT client * 100000 + i) AS d FROM t"})
    check(b == {"rows": [{"n": CLIENTS * PER_CLIENT, "d": CLIENTS * PER_CLIENT}]}, "every row present once: %s" % b)
    for c in range(CLIENTS):
        st, b, _ = srv.post("/db/main/query", {"sql": "SELECT min(i) AS lo, max(i) AS hi, count(*) AS n FROM t WHERE client = ?", "params": [c]})
        check(b == {"rows": [{"lo": 0, "hi": PER_CLIENT - 1, "n": PER_CLIENT}]}, "client %d rows: %s" % (c, b))

finish()
