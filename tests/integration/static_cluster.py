"""A static-replication cluster of real gatestream processes on loopback, shared by the cluster
integration tests (test_cluster_tcp, test_cluster_grpc, test_table_modes, test_status_page).

StaticCluster owns a temporary work dir (certificates, node data dirs, anything else the test
puts there), writes each node's YAML (the http client transport, a replication transport
named 'repl' over tcp or grpc, optionally with mutual TLS, and a replication section naming
one primary and its replicas), starts the nodes as gslib.Server processes, stops them and
removes every file. The helpers below it poll a node (bounded) until a condition holds.
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

from gslib import Server, check, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
CLUSTER_EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(HERE)), "config", "cluster")

# What a replica writes as its repl transport's port when it is not told: tcp 0 (it listens on
# an OS-assigned port), grpc -1 (it does not listen; see transports/*/README.md).
REPLICA_PORT = {"tcp": 0, "grpc": -1}

NODE_YAML = """
node: {{ id: {id}, data_dir: {data_dir} }}
log: {{ level: info }}
plugins:
  - name: http
    kind: client_transport
{plugins}
  - name: repl
    kind: repl_transport
    plugin: {transport}
    config:
      host: 127.0.0.1
      port: {repl_port}
{tls}
{transport_options}
{dial}
server:
  host: 127.0.0.1
  port: {http_port}
  accept_sql: true
{server}
databases:
  - id: main
    path: main.db
{databases}
replication:
  role: {role}
  transport: repl
{replication}
  peers:
{peers}
{extra}
"""


def make_certs(example, out_dir, *names):
    """Runs config/cluster/<example>/make-certs.sh OUT_DIR [NAMES...]: a private CA (ca.pem,
    ca.key) and NAME.pem / NAME.key signed by it with CN NAME for each name (static-grpc's
    script takes no names and always makes node-a, node-b and node-c)."""
    subprocess.run(["sh", os.path.join(CLUSTER_EXAMPLES, example, "make-certs.sh"), out_dir] +
                   list(names), check=True, stdout=subprocess.DEVNULL)


def indent(text, spaces):
    """text (YAML lines) with every non-empty line indented by spaces more."""
    pad = " " * spaces
    return "\n".join(pad + line if line.strip() else line for line in text.split("\n"))


class StaticCluster:
    """One primary and its replicas in static replication mode, each a real gatestream process
    on loopback ports. Use as a context manager: on exit every node still running is stopped
    (SIGTERM, bounded) and the work dir and the nodes' temp dirs are removed.

    Every node serves HTTP on its own free port (accept_sql on) with one database 'main'
    (main.db) and has a repl_transport plugin named 'repl' of the given transport; the primary
    listens on self.repl_port, each replica dials it there (transport-level peers) and names it
    as its primary, and the primary names every id in `replicas` as a replica.

    Parameters:
      transport          repl transport plugin: "tcp" or "grpc".
      primary            the primary's node id.
      replicas           the replica ids the primary's replication.peers lists (all that may
                         ever join, not only those started).
      prefix             mkdtemp prefix of the work dir (self.work).
      certs_from         None: no TLS. Otherwise a folder of config/cluster whose
                         make-certs.sh makes the CA and the node certificates in
                         self.work/certs (self.certs); each node then sets tls_cert, tls_key
                         (CERT.pem / CERT.key, CERT defaulting to certs/<node id>) and
                         tls_ca_cert (certs/ca.pem), i.e. mutual TLS.
      cert_names         the node ids make-certs.sh makes certificates for.
      transport_options  YAML lines added to the transport's config (after host, port and
                         TLS), e.g. "heartbeat_ms: 300\nreconnect_min_ms: 50".
      plugins            YAML of more plugin entries, listed between http and repl.
      server             YAML lines added to the server section (e.g. "status_page: true").
      replication        YAML lines added to the replication section of every node (e.g.
                         "write_forwarding: true").
      replica_port       the repl transport's port on a replica (default REPLICA_PORT of the
                         transport).
    These cluster-wide fragments are given without indent and may span lines; they are
    indented to their place (plugins 2 spaces, transport_options 6, server and replication 2).
    The per-node fragments of node() are written as given."""

    def __init__(self, transport, primary, replicas, prefix, certs_from=None, cert_names=(),
                 transport_options="", plugins="", server="", replication="",
                 replica_port=None):
        self.transport = transport
        self.primary = primary
        self.replicas = list(replicas)
        self.transport_options = transport_options
        self.plugins = plugins
        self.server = server
        self.replication = replication
        self.replica_port = REPLICA_PORT[transport] if replica_port is None else replica_port
        self.repl_port = free_port()
        self.running = []  # started and not stopped, in start order
        self.nodes = []    # every Server made, for the clean-up
        self.work = tempfile.mkdtemp(prefix=prefix)
        self.certs = os.path.join(self.work, "certs") if certs_from else None
        try:
            if certs_from:
                make_certs(certs_from, self.certs, *cert_names)
        except BaseException:
            shutil.rmtree(self.work, ignore_errors=True)
            raise

    def node(self, node_id, cert=None, data_dir=None, databases="", extra=""):
        """A Server for node_id, not started: the primary when node_id is the cluster's primary,
        else a replica. cert: path of the certificate without .pem/.key (default
        certs/<node_id>); data_dir: default work/<node_id> (pass an old node's to restart it
        on its files); databases: YAML lines written as given (with their own indent) right
        after the main database entry: more keys of main at four spaces (write_proxy,
        tables) or more databases at two ("  - id: ..."); extra: YAML lines written as given
        at the end of the replication section (e.g. "  initial_sync: false")."""
        primary = node_id == self.primary
        http_port = free_port()
        data_dir = data_dir or os.path.join(self.work, node_id)
        tls = ""
        if self.certs:
            cert = cert or os.path.join(self.certs, node_id)
            tls = ("      tls_cert: %s.pem\n      tls_key: %s.key\n      tls_ca_cert: %s/ca.pem"
                   % (cert, cert, self.certs))
        if primary:
            dial = ""
            peers = "\n".join("    - { id: %s, role: replica }" % r for r in self.replicas)
        else:
            dial = "      peers:\n        - { id: %s, address: 127.0.0.1:%d }" % (
                self.primary, self.repl_port)
            peers = "    - { id: %s, role: primary }" % self.primary
        text = NODE_YAML.format(
            id=node_id, data_dir=data_dir, plugins=indent(self.plugins, 2),
            transport=self.transport,
            repl_port=self.repl_port if primary else self.replica_port, tls=tls,
            transport_options=indent(self.transport_options, 6), dial=dial,
            http_port=http_port, server=indent(self.server, 2), databases=databases,
            role="primary" if primary else "replica",
            replication=indent(self.replication, 2), peers=peers, extra=extra)
        srv = Server(yaml_text=text, port=http_port, data_dir=data_dir)
        self.nodes.append(srv)
        return srv

    def start(self, node_id, **kw):
        """node(node_id, **kw) started (it answers /health) and counted as running."""
        srv = self.node(node_id, **kw)
        srv.start()
        self.running.append(srv)
        return srv

    def stop(self, srv):
        """SIGTERM one running node (bounded); its exit status."""
        self.running.remove(srv)
        code, _ = srv.stop()
        return code

    def kill9(self, srv):
        """SIGKILL one running node."""
        self.running.remove(srv)
        srv.kill9()

    def stop_all(self):
        """SIGTERM every running node, the last started first (replicas before their primary,
        as an operator stops a cluster: no replica is left redialling a primary that is going
        away); checks that each exits with status 0."""
        for srv in reversed(list(self.running)):
            code = self.stop(srv)
            check(code == 0, "%s stopped with %s; its log ends:\n%s" %
                  (srv.config, code, srv.read_log()[-3000:] if code != 0 else ""))

    def close(self):
        for srv in self.running:
            try:
                srv.stop()
            except Exception:  # noqa: BLE001 - cleanup must go on
                pass
        self.running = []
        for srv in self.nodes:
            srv.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def sql(srv, statement, params=None, concern=None, headers=None, timeout=15.0):
    """One statement on database main: /query for a SELECT, else /execute; concern adds a
    writeConcern of that level (10 s). Returns (status, body, headers)."""
    body = {"sql": statement, "params": params or []}
    if concern:
        body["writeConcern"] = {"level": concern, "timeoutMs": 10000}
    path = "/db/main/query" if statement.lstrip().upper().startswith("SELECT") else \
        "/db/main/execute"
    return srv.post(path, body, headers=headers, timeout=timeout)


def table(srv):
    """Every row of t (id, v) by id, or None when the node cannot answer (or has no t)."""
    try:
        st, body, _ = sql(srv, "SELECT id, v FROM t ORDER BY id", timeout=10.0)
    except OSError:
        return None
    return body["rows"] if st == 200 else None


def converged(primary, replica, what, timeout=30.0):
    """Waits (bounded) until the replica holds exactly the primary's rows of t."""
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


def wait_until(what, fn, timeout=30.0, every=0.1):
    """Polls fn (bounded); its last value, or None when it never became true."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    print("timed out waiting for %s (last: %r)" % (what, last), flush=True)
    return None


def wait_log(srv, needle, timeout=15.0):
    """Waits (bounded) until needle is in srv's log."""
    return wait_until("%r in the log of %s" % (needle, srv.config),
                      lambda: needle in srv.read_log(), timeout) is not None


class Inserter:
    """A thread that inserts rows (key, value) into t on srv over one keep-alive HTTP
    connection, keys first to last - 1 in order, until stop() or the last key; self.acked
    lists the keys the server answered 200."""

    def __init__(self, srv, first, last, value):
        self.srv, self.first, self.last, self.value = srv, first, last, value
        self.acked = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        key = self.first
        try:
            while not self.done.is_set() and key < self.last:
                conn.request("POST", "/db/main/execute",
                             json.dumps({"sql": "INSERT INTO t (id, v) VALUES (?, ?)",
                                         "params": [key, self.value]}),
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.acked.append(key)
                key += 1
        finally:
            conn.close()

    def start(self):
        self.thread.start()
        return self

    def wait_acked(self, n, timeout):
        """Waits (bounded) until n inserts are acknowledged."""
        deadline = time.time() + timeout
        while time.time() < deadline and len(self.acked) < n:
            time.sleep(0.01)

    def stop(self):
        self.done.set()
        self.thread.join(timeout=30)


def copy_database(srv, dest_dir):
    """A consistent snapshot of srv's main.db (sqlite3 backup of the live file, WAL included)
    as dest_dir/main.db (dest_dir is made); returns the highest change-log seq it holds."""
    os.makedirs(dest_dir)
    src = sqlite3.connect(os.path.join(srv.data_dir, "main.db"))
    dst = sqlite3.connect(os.path.join(dest_dir, "main.db"))
    src.backup(dst)
    src.close()
    seq = dst.execute("SELECT coalesce(max(seq), 0) FROM _sirannon_changes").fetchone()[0]
    dst.close()
    return seq
