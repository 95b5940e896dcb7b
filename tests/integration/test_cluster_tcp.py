"""A cluster of gatestream processes replicating over the tcp transport (transports/tcp) with
mutual TLS on loopback.

node-a (primary) holds data before any replica exists; node-b and node-c join it (first
sync) and converge; live writes replicate; a write sent to a replica is forwarded; a
writeConcern majority write is met, also while a replica is down; node-c is killed with
SIGKILL while writes stream, comes back on its data dir and converges without a new first
sync; node-d starts from an out-of-band copy of node-a's file with initial_sync false and
resume_from_seq and converges without a first sync; node-e (certificate CN 'mallory') and
node-f (certificate from another CA) are refused and never replicate.

Certificates come from config/cluster/static-tcp/make-certs.sh at test time. Ports are
ephemeral; every wait is bounded."""
import os
import time

from gslib import check, finish
from static_cluster import (Inserter, StaticCluster, converged, copy_database, make_certs, sql,
                            table, wait_log)

REPLICAS = ["node-b", "node-c", "node-d", "node-e", "node-f"]

# The cluster CA signs node-a..node-e and "mallory"; another CA signs a node-f of its own.
cluster = StaticCluster(
    "tcp", "node-a", REPLICAS, prefix="gs-tcp-it-", certs_from="static-tcp",
    cert_names=["node-a", "node-b", "node-c", "node-d", "mallory"],
    transport_options="heartbeat_ms: 300\nreconnect_min_ms: 50\nreconnect_max_ms: 500",
    replication="write_forwarding: true")
work, certs, REPL_PORT = cluster.work, cluster.certs, cluster.repl_port
rogue = os.path.join(work, "rogue")

t0 = time.time()
with cluster:
    make_certs("static-tcp", rogue, "node-f")
    # --- a primary with data, then two replicas join it (first sync) ---
    a = cluster.start("node-a")
    st, body, _ = sql(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    check(st == 200, "create table: %s" % body)
    for i in range(1, 301):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "seed-%d" % i])
    check(wait_log(a, "listening on 127.0.0.1:%d, TLS 1.3 with mutual authentication" % REPL_PORT),
          "node-a listens with mutual TLS")

    b = cluster.start("node-b")
    c = cluster.start("node-c")
    check(converged(a, b, "first sync of node-b"), "node-b converges after its first sync")
    check(converged(a, c, "first sync of node-c"), "node-c converges after its first sync")
    check("first sync from node-a verified" in b.read_log(), "node-b ran a first sync")
    check(wait_log(a, "peer 'node-b' (replica, term 0, protocol 1.0) connected from") and
          "TLS 1.3, certificate CN verified" in a.read_log(), "node-a verified node-b's CN")

    # --- live writes replicate ---
    for i in range(301, 401):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "live-%d" % i])
    sql(a, "UPDATE t SET v = 'updated' WHERE id <= 10")
    sql(a, "DELETE FROM t WHERE id BETWEEN 11 AND 20")
    check(converged(a, b, "live writes b") and converged(a, c, "live writes c"),
          "inserts, updates and deletes replicate")

    # --- a write sent to a replica is forwarded to the primary ---
    st, body, _ = sql(c, "INSERT INTO t (id, v) VALUES (?, ?)", [5001, "forwarded"])
    check(st == 200 and body.get("changes") == 1, "forwarded write: %s %s" % (st, body))
    st, body, _ = sql(a, "SELECT v FROM t WHERE id = 5001")
    check(st == 200 and body.get("rows") == [{"v": "forwarded"}],
          "the forwarded write is on the primary: %s" % body)
    check(converged(a, b, "forwarded b"), "the forwarded write reached node-b")

    # --- writeConcern majority, with both replicas up ---
    st, body, _ = sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [5002, "majority"],
                      concern="majority")
    check(st == 200, "majority write: %s %s" % (st, body))

    # --- kill -9 of node-c while writes stream; writes go on; it comes back and converges ---
    w = Inserter(a, 10000, 20000, "stream").start()
    w.wait_acked(300, 15)
    cluster.kill9(c)
    at_kill = len(w.acked)
    check(wait_log(a, "peer node-c (replica) disconnected"), "node-a saw node-c go")
    # A majority write while node-c is down: node-b alone is the majority of the connected.
    st, body, _ = sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [5003, "majority-one-down"],
                      concern="majority")
    check(st == 200, "majority write with node-c down: %s %s" % (st, body))
    w.wait_acked(at_kill + 300, 15)
    w.stop()
    acked = w.acked
    check(len(acked) > at_kill, "writes went on after the kill (%d -> %d)" % (at_kill, len(acked)))
    c2 = cluster.start("node-c", data_dir=c.data_dir)
    check(converged(a, c2, "node-c after kill -9", 45), "node-c converges after kill -9")
    check("first sync requested" not in c2.read_log(),
          "the restarted node-c resumed from its position (no new first sync)")
    check(converged(a, b, "node-b after the kill"), "node-b kept up throughout")

    # --- node-d from an out-of-band copy: initial_sync false + resume_from_seq ---
    d_dir = os.path.join(work, "node-d")
    copy_seq = copy_database(a, d_dir)
    for i in range(30001, 30101):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "after-copy"])
    d = cluster.start("node-d", data_dir=d_dir,
                      extra="  initial_sync: false\n  resume_from_seq: %d" % copy_seq)
    check(converged(a, d, "node-d from a copy", 45),
          "node-d (copied at seq %d) converges" % copy_seq)
    check("first sync requested" not in d.read_log(), "node-d ran no first sync")
    check("resuming from seq %d of node-a" % copy_seq in d.read_log(),
          "node-d resumed from the copy's seq")

    # --- refused identities: a wrong CN and an untrusted CA never replicate ---
    e = cluster.start("node-e", cert=os.path.join(certs, "mallory"))
    f = cluster.start("node-f", cert=os.path.join(rogue, "node-f"))
    sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [40001, "not for intruders"])
    check(wait_log(a, "the hello says node 'node-e' but its certificate's CN is 'mallory'"),
          "node-a refused node-e (CN mallory)")
    check(wait_log(e, "the peer closed it: refused"), "node-e was told why")
    # The rogue CA has the cluster CA's name, so node-f does present its certificate, and
    # node-a's chain verification refuses it (with another name it would present none).
    deadline = time.time() + 15
    while time.time() < deadline and "refused the peer's certificate" not in a.read_log() and \
            "presented no certificate signed by" not in a.read_log():
        time.sleep(0.1)
    check("refused the peer's certificate" in a.read_log() or
          "presented no certificate signed by" in a.read_log(),
          "node-a refused node-f (another CA)")
    check(wait_log(f, "connection to node-a"), "node-f's connection ended")
    check(table(e) is None and table(f) is None, "node-e and node-f hold no replicated table")
    log_a = a.read_log()
    check("peer 'node-e'" not in log_a and "peer 'node-f'" not in log_a,
          "node-a never let node-e or node-f in")
    check(converged(a, b, "final b") and converged(a, c2, "final c") and
          converged(a, d, "final d"), "the real replicas hold everything")

    cluster.stop_all()
    print("tcp cluster test: %d rows streamed during the kill, %.1f s" %
          (len(acked), time.time() - t0), flush=True)

finish()
