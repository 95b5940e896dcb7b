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
MAKE_CERTS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "config", "cluster",
                          "static-tcp", "make-certs.sh")

work = tempfile.mkdtemp(prefix="gs-tcp-it-")
certs = os.path.join(work, "certs")
rogue = os.path.join(work, "rogue")
# The cluster CA signs node-a..node-e and "mallory"; another CA signs a node-f of its own.
subprocess.run(["sh", MAKE_CERTS, certs, "node-a", "node-b", "node-c", "node-d", "mallory"],
               check=True, stdout=subprocess.DEVNULL)
subprocess.run(["sh", MAKE_CERTS, rogue, "node-f"], check=True, stdout=subprocess.DEVNULL)

REPL_PORT = free_port()  # node-a's replication port
REPLICAS = ["node-b", "node-c", "node-d", "node-e", "node-f"]

CONFIG = """
node: {{ id: {id}, data_dir: {data_dir} }}
log: {{ level: info }}
plugins:
  - name: http
    kind: client_transport
  - name: repl
    kind: repl_transport
    plugin: tcp
    config:
      host: 127.0.0.1
      port: {repl_port}
      tls_cert: {cert}.pem
      tls_key: {cert}.key
      tls_ca_cert: {certs}/ca.pem
      heartbeat_ms: 300
      reconnect_min_ms: 50
      reconnect_max_ms: 500
{dial}
server:
  host: 127.0.0.1
  port: {http_port}
  accept_sql: true
databases:
  - id: main
    path: main.db
replication:
  role: {role}
  transport: repl
  write_forwarding: true
  peers:
{peers}
{extra}
"""


def make_node(node_id, cert=None, data_dir=None, extra=""):
    """A Server for node_id: node-a is the primary, the others replicas dialling it."""
    http_port = free_port()
    primary = node_id == "node-a"
    if primary:
        dial = ""
        peers = "\n".join("    - { id: %s, role: replica }" % r for r in REPLICAS)
    else:
        dial = "      peers:\n        - { id: node-a, address: 127.0.0.1:%d }" % REPL_PORT
        peers = "    - { id: node-a, role: primary }"
    data_dir = data_dir or os.path.join(work, node_id)
    text = CONFIG.format(id=node_id, data_dir=data_dir, repl_port=REPL_PORT if primary else 0,
                         cert=cert or os.path.join(certs, node_id), certs=certs, dial=dial,
                         http_port=http_port, role="primary" if primary else "replica",
                         peers=peers, extra=extra)
    return Server(yaml_text=text, port=http_port, data_dir=data_dir)


def sql(srv, statement, params=None, concern=None, timeout=15.0):
    body = {"sql": statement, "params": params or []}
    if concern:
        body["writeConcern"] = {"level": concern, "timeoutMs": 10000}
    path = "/db/main/query" if statement.lstrip().upper().startswith("SELECT") else \
        "/db/main/execute"
    return srv.post(path, body, timeout=timeout)


def table(srv):
    """Every row of t, or None when the node cannot answer (or has no table t)."""
    try:
        st, body, _ = sql(srv, "SELECT id, v FROM t ORDER BY id", timeout=10.0)
    except OSError:
        return None
    return body["rows"] if st == 200 else None


def converged(primary, replica, what, timeout=30.0):
    """Wait (bounded) until the replica holds exactly the primary's rows."""
    deadline = time.time() + timeout
    want = got = None
    while time.time() < deadline:
        want, got = table(primary), table(replica)
        if want is not None and want == got:
            return True
        time.sleep(0.1)
    print("%s: primary has %s rows, replica %s" %
          (what, None if want is None else len(want), None if got is None else len(got)),
          flush=True)
    return False


def wait_log(srv, needle, timeout=15.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if needle in srv.read_log():
            return True
        time.sleep(0.1)
    return False


running = []


def start(srv):
    srv.start()
    running.append(srv)
    return srv


t0 = time.time()
try:
    # --- a primary with data, then two replicas join it (first sync) ---
    a = start(make_node("node-a"))
    st, body, _ = sql(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    check(st == 200, "create table: %s" % body)
    for i in range(1, 301):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "seed-%d" % i])
    check(wait_log(a, "listening on 127.0.0.1:%d, TLS 1.3 with mutual authentication" % REPL_PORT),
          "node-a listens with mutual TLS")

    b = start(make_node("node-b"))
    c = start(make_node("node-c"))
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
    acked = []
    stop = threading.Event()

    def writer():
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
        key = 10000
        try:
            while not stop.is_set() and key < 20000:
                conn.request("POST", "/db/main/execute",
                             json.dumps({"sql": "INSERT INTO t (id, v) VALUES (?, ?)",
                                         "params": [key, "stream"]}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    acked.append(key)
                key += 1
        finally:
            conn.close()

    w = threading.Thread(target=writer)
    w.start()
    deadline = time.time() + 15
    while time.time() < deadline and len(acked) < 300:
        time.sleep(0.01)
    c.kill9()
    running.remove(c)
    at_kill = len(acked)
    check(wait_log(a, "peer node-c (replica) disconnected"), "node-a saw node-c go")
    # A majority write while node-c is down: node-b alone is the majority of the connected.
    st, body, _ = sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [5003, "majority-one-down"],
                      concern="majority")
    check(st == 200, "majority write with node-c down: %s %s" % (st, body))
    deadline = time.time() + 15
    while time.time() < deadline and len(acked) < at_kill + 300:
        time.sleep(0.01)
    stop.set()
    w.join(timeout=30)
    check(len(acked) > at_kill, "writes went on after the kill (%d -> %d)" % (at_kill, len(acked)))
    c2 = start(make_node("node-c", data_dir=c.data_dir))
    check(converged(a, c2, "node-c after kill -9", 45), "node-c converges after kill -9")
    check("first sync requested" not in c2.read_log(),
          "the restarted node-c resumed from its position (no new first sync)")
    check(converged(a, b, "node-b after the kill"), "node-b kept up throughout")

    # --- node-d from an out-of-band copy: initial_sync false + resume_from_seq ---
    d_dir = os.path.join(work, "node-d")
    os.makedirs(d_dir)
    src = sqlite3.connect(os.path.join(a.data_dir, "main.db"))
    dst = sqlite3.connect(os.path.join(d_dir, "main.db"))
    src.backup(dst)  # a consistent snapshot of the live file (WAL included)
    src.close()
    copy_seq = dst.execute("SELECT coalesce(max(seq), 0) FROM _sirannon_changes").fetchone()[0]
    dst.close()
    for i in range(30001, 30101):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "after-copy"])
    d = start(make_node("node-d", data_dir=d_dir,
                        extra="  initial_sync: false\n  resume_from_seq: %d" % copy_seq))
    check(converged(a, d, "node-d from a copy", 45),
          "node-d (copied at seq %d) converges" % copy_seq)
    check("first sync requested" not in d.read_log(), "node-d ran no first sync")
    check("resuming from seq %d of node-a" % copy_seq in d.read_log(),
          "node-d resumed from the copy's seq")

    # --- refused identities: a wrong CN and an untrusted CA never replicate ---
    e = start(make_node("node-e", cert=os.path.join(certs, "mallory")))
    f = start(make_node("node-f", cert=os.path.join(rogue, "node-f")))
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

    for s in list(running):
        code, _ = s.stop()
        check(code == 0, "%s stopped with %s" % (s.config, code))
        running.remove(s)
    print("tcp cluster test: %d rows streamed during the kill, %.1f s" %
          (len(acked), time.time() - t0), flush=True)
finally:
    for s in running:
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - cleanup must go on
            pass
    for s in [v for v in list(globals().values()) if isinstance(v, Server)]:
        s.cleanup()
    shutil.rmtree(work, ignore_errors=True)

finish()
