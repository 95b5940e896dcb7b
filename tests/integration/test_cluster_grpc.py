"""Three (and more) gatestream processes replicating over the gRPC transport with mutual TLS on
loopback: first sync of a running primary, writes replicate, forwarded writes, writeConcern
majority, kill -9 of a replica while writes continue then restart and converge, a replica
started from an out-of-band copy with initial_sync false and resume_from_seq, and a node with
a wrong certificate CN and one with an untrusted CA refused (they never replicate).
Certificates are made at test time by config/cluster/static-grpc/make-certs.sh and openssl.
Every wait is bounded."""
import os
import subprocess
import time

from gslib import check, finish
from static_cluster import Inserter, StaticCluster, converged, copy_database, table

REPLICA_IDS = ["node-b", "node-c", "node-d", "node-e", "node-f"]

cluster = StaticCluster(
    "grpc", "node-a", REPLICA_IDS, prefix="gs-grpc-it-", certs_from="static-grpc",
    transport_options="reconnect_min_ms: 50\nreconnect_max_ms: 1000",
    replication="write_forwarding: true")
tmp, certs = cluster.work, cluster.certs


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, cwd=certs,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_cert(name, cn, ca):
    with open(os.path.join(certs, name + ".ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")


def post(srv, path, body, timeout=30.0):
    return srv.post(path, body, timeout=timeout)


def insert(srv, key, v="x", concern=None):
    body = {"sql": "INSERT INTO t (id, v) VALUES (?, ?)", "params": [key, v]}
    if concern:
        body["writeConcern"] = {"level": concern, "timeoutMs": 10000}
    return post(srv, "/db/main/execute", body)


t0 = time.time()
with cluster:
    make_cert("node-d", "node-d", "ca")
    make_cert("node-e-wrong-cn", "mallory", "ca")           # right CA, CN is not node-e
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj",
            "/CN=rogue")
    make_cert("node-f-rogue", "node-f", "rogue")            # right CN, CA node-a does not trust

    a = cluster.start("node-a")
    st, b, _ = post(a, "/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"})
    check(st == 200, "create table: %s" % b)
    for i in range(1, 201):
        insert(a, i, "before-sync-%d" % i)
    check("TLS, client certificates required" in a.read_log(), "node-a serves mutual TLS")

    # Two replicas join a running primary with data: first sync, then they converge.
    nb = cluster.start("node-b")
    nc = cluster.start("node-c")
    check(converged(a, nb, "first sync b"), "node-b converges after its first sync")
    check(converged(a, nc, "first sync c"), "node-c converges after its first sync")

    # Writes on the primary replicate.
    for i in range(201, 301):
        insert(a, i, "live-%d" % i)
    check(converged(a, nb, "live b") and converged(a, nc, "live c"), "live writes replicate")

    # A write on a replica is forwarded to the primary and comes back.
    st, b, _ = insert(nb, 1001, "forwarded")
    check(st == 200 and b.get("changes") == 1, "forwarded write: %s %s" % (st, b))
    check(converged(a, nc, "forwarded c"), "the forwarded write reached node-c")
    st, b, _ = post(a, "/db/main/query", {"sql": "SELECT v FROM t WHERE id = 1001"})
    check(b.get("rows") == [{"v": "forwarded"}], "the forwarded write is on the primary: %s" % b)

    # writeConcern majority is met with both replicas connected.
    st, b, _ = insert(a, 1002, "majority", concern="majority")
    check(st == 200, "majority write: %s %s" % (st, b))
    st, b, _ = post(nc, "/db/main/query", {"sql": "SELECT v FROM t WHERE id = 1002"})
    check(st == 200 and b.get("rows") == [{"v": "majority"}] or converged(a, nc, "majority"),
          "the majority write is on a replica")

    # kill -9 of a replica while writes continue; it restarts and converges.
    w = Inserter(a, 2000, 6000, "during-kill").start()
    w.wait_acked(200, 10)
    cluster.kill9(nc)
    n_at_kill = len(w.acked)
    w.wait_acked(n_at_kill + 300, 10)
    w.stop()
    acked = w.acked
    check(len(acked) > n_at_kill, "writes continued after the kill (%d -> %d)" % (n_at_kill, len(acked)))
    nc2 = cluster.start("node-c", data_dir=nc.data_dir)
    check(converged(a, nc2, "after kill -9", 40), "node-c converges after kill -9 and restart")
    check(converged(a, nb, "b after kill"), "node-b kept up")

    # An out-of-band copy of the primary's file, started with initial_sync false and the
    # primary's change-log seq of the copy as resume_from_seq.
    d_dir = os.path.join(tmp, "node-d")
    seq = copy_database(a, d_dir)
    for i in range(6001, 6051):
        insert(a, i, "after-copy")
    nd = cluster.start("node-d", data_dir=d_dir,
                       extra="  initial_sync: false\n  resume_from_seq: %d" % seq)
    check(converged(a, nd, "out-of-band copy", 40),
          "node-d (copy at seq %d, no first sync) converges" % seq)
    check("first sync requested" not in nd.read_log(), "node-d did not run a first sync")

    # A wrong CN and an untrusted CA are refused: they never replicate.
    ne = cluster.start("node-e", cert=os.path.join(certs, "node-e-wrong-cn"))
    nf = cluster.start("node-f", cert=os.path.join(certs, "node-f-rogue"))
    insert(a, 7001, "not-for-intruders")
    deadline = time.time() + 15
    while time.time() < deadline and "CN 'mallory' does not match" not in a.read_log():
        time.sleep(0.2)
    check("CN 'mallory' does not match the Hello's node_id 'node-e'" in a.read_log(),
          "node-a refused node-e's wrong CN")
    deadline = time.time() + 15
    while time.time() < deadline and "no link to node-a" not in nf.read_log():
        time.sleep(0.2)
    check("no link to node-a" in nf.read_log(), "node-f cannot connect (untrusted CA)")
    check(table(ne) is None and table(nf) is None, "node-e and node-f have no replicated table")
    check("peer node-e connected" not in a.read_log() and "peer node-f connected" not in a.read_log(),
          "node-a never saw node-e or node-f connect")

    # Everyone stops cleanly.
    cluster.stop_all()
    print("cluster test took %.1f s" % (time.time() - t0), flush=True)

finish()
