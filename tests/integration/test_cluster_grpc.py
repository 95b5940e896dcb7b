"""Three (and more) gatestream processes replicating over the gRPC transport with mutual TLS on
loopback: first sync of a running primary, writes replicate, forwarded writes, writeConcern
majority, kill -9 of a replica while writes continue then restart and converge, a replica
started from an out-of-band copy with initial_sync false and resume_from_seq, and a node with
a wrong certificate CN and one with an untrusted CA refused (they never replicate).
Certificates are made at test time by config/cluster/static-grpc/make-certs.sh and openssl.
Every wait is bounded."""
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time

from gslib import Server, check, finish, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAKE_CERTS = os.path.join(ROOT, "config", "cluster", "static-grpc", "make-certs.sh")

tmp = tempfile.mkdtemp(prefix="gs-grpc-it-")
certs = os.path.join(tmp, "certs")
subprocess.run(["sh", MAKE_CERTS, certs], check=True, stdout=subprocess.DEVNULL)


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


make_cert("node-d", "node-d", "ca")
make_cert("node-e-wrong-cn", "mallory", "ca")           # right CA, CN is not node-e
openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2", "-subj", "/CN=rogue")
make_cert("node-f-rogue", "node-f", "rogue")            # right CN, CA node-a does not trust

PRIMARY_GRPC = free_port()

YAML = """
node: {{ id: {id}, data_dir: {data_dir} }}
log: {{ level: info }}
plugins:
  - name: http
    kind: client_transport
  - name: repl
    kind: repl_transport
    plugin: grpc
    config:
      host: 127.0.0.1
      port: {grpc_port}
      tls_cert: {certs}/{cert}.pem
      tls_key: {certs}/{cert}.key
      tls_ca_cert: {certs}/ca.pem
      reconnect_min_ms: 50
      reconnect_max_ms: 1000
{transport_peers}
server:
  host: 127.0.0.1
  port: {port}
  accept_sql: true
databases:
  - id: main
    path: main.db
replication:
  role: {role}
  transport: repl
  write_forwarding: true
  peers:
{repl_peers}
{extra}
"""

REPLICA_IDS = ["node-b", "node-c", "node-d", "node-e", "node-f"]


def node(node_id, role, cert=None, data_dir=None, extra=""):
    port = free_port()
    d = data_dir or os.path.join(tmp, node_id)
    if role == "primary":
        tpeers = ""
        rpeers = "\n".join("    - { id: %s, role: replica }" % r for r in REPLICA_IDS)
        grpc_port = PRIMARY_GRPC
    else:
        tpeers = "      peers:\n        - { id: node-a, address: 127.0.0.1:%d }" % PRIMARY_GRPC
        rpeers = "    - { id: node-a, role: primary }"
        grpc_port = -1
    text = YAML.format(id=node_id, data_dir=d, grpc_port=grpc_port, certs=certs,
                       cert=cert or node_id, transport_peers=tpeers, port=port, role=role,
                       repl_peers=rpeers, extra=extra)
    return Server(yaml_text=text, port=port, data_dir=d)


def post(srv, path, body, timeout=30.0):
    return srv.post(path, body, timeout=timeout)


def rows(srv):
    try:
        st, b, _ = post(srv, "/db/main/query", {"sql": "SELECT id, v FROM t ORDER BY id"}, 10.0)
    except OSError:
        return None
    return b["rows"] if st == 200 else None


def converge(primary, replica, what, timeout=30.0):
    deadline = time.time() + timeout
    want = got = None
    while time.time() < deadline:
        want, got = rows(primary), rows(replica)
        if want is not None and want == got:
            return True
        time.sleep(0.2)
    print("%s: primary %s rows, replica %s" % (what, len(want or []), None if got is None else len(got)))
    return False


def insert(srv, key, v="x", concern=None):
    body = {"sql": "INSERT INTO t (id, v) VALUES (?, ?)", "params": [key, v]}
    if concern:
        body["writeConcern"] = {"level": concern, "timeoutMs": 10000}
    return post(srv, "/db/main/execute", body)


started = []
t0 = time.time()
try:
    a = node("node-a", "primary")
    a.start()
    started.append(a)
    st, b, _ = post(a, "/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"})
    check(st == 200, "create table: %s" % b)
    for i in range(1, 201):
        insert(a, i, "before-sync-%d" % i)
    check("TLS, client certificates required" in a.read_log(), "node-a serves mutual TLS")

    # Two replicas join a running primary with data: first sync, then they converge.
    nb = node("node-b", "replica")
    nc = node("node-c", "replica")
    nb.start()
    nc.start()
    started += [nb, nc]
    check(converge(a, nb, "first sync b"), "node-b converges after its first sync")
    check(converge(a, nc, "first sync c"), "node-c converges after its first sync")

    # Writes on the primary replicate.
    for i in range(201, 301):
        insert(a, i, "live-%d" % i)
    check(converge(a, nb, "live b") and converge(a, nc, "live c"), "live writes replicate")

    # A write on a replica is forwarded to the primary and comes back.
    st, b, _ = insert(nb, 1001, "forwarded")
    check(st == 200 and b.get("changes") == 1, "forwarded write: %s %s" % (st, b))
    check(converge(a, nc, "forwarded c"), "the forwarded write reached node-c")
    st, b, _ = post(a, "/db/main/query", {"sql": "SELECT v FROM t WHERE id = 1001"})
    check(b.get("rows") == [{"v": "forwarded"}], "the forwarded write is on the primary: %s" % b)

    # writeConcern majority is met with both replicas connected.
    st, b, _ = insert(a, 1002, "majority", concern="majority")
    check(st == 200, "majority write: %s %s" % (st, b))
    st, b, _ = post(nc, "/db/main/query", {"sql": "SELECT v FROM t WHERE id = 1002"})
    check(st == 200 and b.get("rows") == [{"v": "majority"}] or converge(a, nc, "majority"),
          "the majority write is on a replica")

    # kill -9 of a replica while writes continue; it restarts and converges.
    stop = threading.Event()
    acked = []

    def writer():
        k = 2000
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        while not stop.is_set() and k < 6000:
            conn.request("POST", "/db/main/execute",
                         json.dumps({"sql": "INSERT INTO t (id, v) VALUES (?, ?)",
                                     "params": [k, "during-kill"]}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                acked.append(k)
            k += 1
        conn.close()

    w = threading.Thread(target=writer)
    w.start()
    deadline = time.time() + 10
    while time.time() < deadline and len(acked) < 200:
        time.sleep(0.02)
    nc.kill9()
    started.remove(nc)
    deadline = time.time() + 10
    n_at_kill = len(acked)
    while time.time() < deadline and len(acked) < n_at_kill + 300:
        time.sleep(0.02)
    stop.set()
    w.join(timeout=30)
    check(len(acked) > n_at_kill, "writes continued after the kill (%d -> %d)" % (n_at_kill, len(acked)))
    nc2 = node("node-c", "replica", data_dir=nc.data_dir)
    nc2.start()
    started.append(nc2)
    check(converge(a, nc2, "after kill -9", 40), "node-c converges after kill -9 and restart")
    check(converge(a, nb, "b after kill"), "node-b kept up")

    # An out-of-band copy of the primary's file, started with initial_sync false and the
    # primary's change-log seq of the copy as resume_from_seq.
    d_dir = os.path.join(tmp, "node-d")
    os.makedirs(d_dir)
    src = sqlite3.connect(os.path.join(a.data_dir, "main.db"))
    dst = sqlite3.connect(os.path.join(d_dir, "main.db"))
    src.backup(dst)
    src.close()
    seq = dst.execute("SELECT coalesce(max(seq), 0) FROM _sirannon_changes").fetchone()[0]
    dst.close()
    for i in range(6001, 6051):
        insert(a, i, "after-copy")
    nd = node("node-d", "replica", data_dir=d_dir,
              extra="  initial_sync: false\n  resume_from_seq: %d" % seq)
    nd.start()
    started.append(nd)
    check(converge(a, nd, "out-of-band copy", 40),
          "node-d (copy at seq %d, no first sync) converges" % seq)
    check("first sync requested" not in nd.read_log(), "node-d did not run a first sync")

    # A wrong CN and an untrusted CA are refused: they never replicate.
    ne = node("node-e", "replica", cert="node-e-wrong-cn")
    nf = node("node-f", "replica", cert="node-f-rogue")
    ne.start()
    nf.start()
    started += [ne, nf]
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
    check(rows(ne) is None and rows(nf) is None, "node-e and node-f have no replicated table")
    check("peer node-e connected" not in a.read_log() and "peer node-f connected" not in a.read_log(),
          "node-a never saw node-e or node-f connect")

    # Everyone stops cleanly.
    for s in list(started):
        code, _ = s.stop()
        check(code == 0, "%s exited with %s" % (s.config, code))
        started.remove(s)
    print("cluster test took %.1f s" % (time.time() - t0), flush=True)
finally:
    for s in started:
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
    for s in [x for x in globals().values() if isinstance(x, Server)]:
        shutil.rmtree(s.tmp, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)

finish()
