"""kill -9 while writes are in flight: after a restart every acknowledged write is there and
the database passes integrity_check. Repeated at several moments."""
import http.client
import json
import os
import threading
import time

from gslib import Server, check, finish

data_dir = None
for round_no in range(3):
    srv = Server(data_dir=data_dir)
    data_dir = srv.data_dir if data_dir is None else data_dir
    srv.start()
    if round_no == 0:
        st, b, _ = srv.post("/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"})
        check(st == 200, "create: %s" % b)
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w):
        n = 0
        try:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
            while not stop.is_set() and n < 100000:
                key = round_no * 10_000_000 + w * 1_000_000 + n
                n += 1
                conn.request("POST", "/db/main/execute",
                             json.dumps({"sql": "INSERT INTO t (id, v) VALUES (?, ?)", "params": [key, "x" * 100]}),
                             {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    with lock:
                        acked.append(key)
        except (OSError, http.client.HTTPException):
            pass  # the server died under us: whatever was acknowledged must survive

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    # let a varying amount of work accumulate, bounded by time, then kill -9
    deadline = time.time() + 10
    while time.time() < deadline and len(acked) < 300 * (round_no + 1):
        time.sleep(0.01)
    srv.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=20)
    check(len(acked) > 0, "round %d: some writes were acknowledged before the kill" % round_no)

    srv2 = Server(data_dir=data_dir)
    srv2.start()
    missing = 0
    for i in range(0, len(acked), 500):
        chunk = acked[i:i + 500]
        st, b, _ = srv2.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t WHERE id IN (%s)" % ",".join("?" * len(chunk)),
                                                "params": chunk})
        missing += len(chunk) - b["rows"][0]["n"]
    print("round %d: %d writes acknowledged before kill -9, %d missing after restart" %
          (round_no, len(acked), missing), flush=True)
    check(missing == 0, "round %d: %d of %d acknowledged writes lost" % (round_no, missing, len(acked)))
    st, b, _ = srv2.post("/db/main/query", {"sql": "PRAGMA integrity_check"})
    check(b == {"rows": [{"integrity_check": "ok"}]}, "round %d: integrity_check: %s" % (round_no, b))
    srv2.stop()
    srv2.cleanup()
    # keep the data dir for the next round
    srv.tmp_keep = True

finish()
