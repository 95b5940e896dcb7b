"""A real etcd-server and three real gatestream processes in coordinator mode, for the failover
tests (test_failover_etcd.py) and the failover soak (bench/failover/soak.py).

The node configs are config/cluster/etcd/node-{a,b,c}.yaml copied into a temporary folder with
free loopback ports, absolute certificate paths (made by config/cluster/etcd/make-certs.sh),
a temporary data dir per node, and ETCD_ENDPOINTS pointing at the etcd this harness started
(temporary data dir, output to a file, stopped by its pid). The group state is read straight
from etcd through its JSON gateway, so what the tests see does not depend on gatestream.
Every wait is a bounded poll of an observable condition."""
import base64
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time

import gslib
from gslib import Server, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLE = os.path.join(ROOT, "config", "cluster", "etcd")
NODE_IDS = ["node-a", "node-b", "node-c"]
EXAMPLE_HTTP = {"node-a": 9881, "node-b": 9882, "node-c": 9883}
EXAMPLE_GRPC = {"node-a": 9891, "node-b": 9892, "node-c": 9893}
CLUSTER_ID = "example"
GROUP_ID = "main"
KEY_PREFIX = "gatestream/"
GROUP_KEY = KEY_PREFIX + "clusters/%s/groups/%s" % (CLUSTER_ID, GROUP_ID)


def wait_for(fn, timeout, interval=0.1):
    """Poll fn() until it returns a truthy value or timeout seconds pass; return the last
    value (falsy on timeout)."""
    deadline = time.time() + timeout
    v = None
    while True:
        try:
            v = fn()
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
            v = None
        if v or time.time() >= deadline:
            return v
        time.sleep(interval)


def http_json(port, method, path, body=None, timeout=5.0):
    """(status, parsed body, headers) or raises OSError/HTTPException."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body) if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return r.status, parsed, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


class Etcd:
    """One etcd-server member on loopback with a temporary data dir."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.port = free_port()
        self.peer_port = free_port()
        self.data_dir = os.path.join(tmp, "etcd-data")
        self.log_path = os.path.join(tmp, "etcd.log")
        self.proc = None
        self.log = None

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=20.0):
        self.log = open(self.log_path, "ab")
        peer = "http://127.0.0.1:%d" % self.peer_port
        self.proc = subprocess.Popen(
            ["etcd", "--name", "gs-test", "--data-dir", self.data_dir,
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", "gs-test=" + peer, "--initial-cluster-state", "new"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        ok = wait_for(lambda: self.proc.poll() is None and self.healthy(), timeout, 0.1)
        if not ok:
            raise RuntimeError("etcd did not become healthy within %.0fs:\n%s" %
                               (timeout, self.read_log()[-3000:]))
        return self

    def healthy(self):
        st, b, _ = http_json(self.port, "GET", "/health", timeout=1.0)
        return st == 200 and isinstance(b, dict) and b.get("health") == "true"

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10.0):
        if not self.proc:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.log:
            self.log.close()
            self.log = None

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def _range(self, key, prefix):
        k = key.encode()
        body = {"key": base64.b64encode(k).decode()}
        if prefix:
            end = k[:-1] + bytes([k[-1] + 1])
            body["range_end"] = base64.b64encode(end).decode()
        st, b, _ = http_json(self.port, "POST", "/v3/kv/range", body, timeout=2.0)
        if st != 200:
            raise OSError("etcd range %s: %s %s" % (key, st, b))
        out = {}
        for kv in b.get("kvs", []):
            out[base64.b64decode(kv["key"]).decode()] = base64.b64decode(kv.get("value", ""))
        return out

    def get(self, key):
        """The value of key (bytes) or None."""
        return self._range(key, False).get(key)

    def get_prefix(self, prefix):
        return self._range(prefix, True)


class Cluster:
    """Three gatestream nodes from config/cluster/etcd over gRPC with mutual TLS."""

    def __init__(self, tmp, etcd, write_forwarding=None, log_level="info"):
        self.tmp = tmp
        self.etcd = etcd
        self.certs = os.path.join(tmp, "certs")
        subprocess.run(["sh", os.path.join(EXAMPLE, "make-certs.sh"), self.certs], check=True,
                       stdout=subprocess.DEVNULL)
        os.environ["ETCD_ENDPOINTS"] = etcd.endpoint  # the configs read ${ETCD_ENDPOINTS}
        self.http = {n: free_port() for n in NODE_IDS}
        self.grpc = {n: free_port() for n in NODE_IDS}
        self.data = {n: os.path.join(tmp, n) for n in NODE_IDS}
        self.config = {}
        self.yaml = {}
        for n in NODE_IDS:
            text = self._rewrite(n, (write_forwarding or {}).get(n), log_level)
            self.yaml[n] = text
            self.config[n] = os.path.join(tmp, n + ".yaml")
            with open(self.config[n], "w") as f:
                f.write(text)
        self.servers = {}

    def _rewrite(self, node, forwarding, log_level):
        with open(os.path.join(EXAMPLE, node + ".yaml")) as f:
            text = f.read()

        def sub(pattern, repl, count_min=1):
            nonlocal text
            text, k = re.subn(pattern, repl, text)
            if k < count_min:
                raise RuntimeError("config/cluster/etcd/%s.yaml changed: '%s' not found" %
                                   (node, pattern))

        for n in NODE_IDS:  # peers' gRPC addresses, then our own ports
            if n != node:
                sub(r"127\.0\.0\.1:%d\b" % EXAMPLE_GRPC[n], "127.0.0.1:%d" % self.grpc[n])
        sub(r"\bport: %d\b" % EXAMPLE_GRPC[node], "port: %d" % self.grpc[node])
        sub(r"\bport: %d\b" % EXAMPLE_HTTP[node], "port: %d" % self.http[node])
        sub(r"http://127\.0\.0\.1:%d\b" % EXAMPLE_HTTP[node],
            "http://127.0.0.1:%d" % self.http[node])
        sub(r"config/cluster/etcd/certs/", self.certs + "/", 3)
        sub(r"data_dir: \S+", "data_dir: " + self.data[node])
        sub(r"level: info", "level: " + log_level)
        if forwarding is not None:
            sub(r"write_forwarding: true", "write_forwarding: %s" % str(forwarding).lower())
        return text

    # ---- processes ----

    def start(self, node, timeout=30.0):
        srv = Server(yaml_text=self.yaml[node], port=self.http[node], data_dir=self.data[node])
        srv.node_id = node
        old = self.servers.get(node)
        if old is not None:
            shutil.rmtree(old.tmp, ignore_errors=True)
        self.servers[node] = srv
        srv.start(timeout=timeout)
        return srv

    def running(self, node):
        s = self.servers.get(node)
        return s is not None and s.proc is not None and s.proc.poll() is None

    def kill9(self, node):
        s = self.servers[node]
        if self.running(node):
            s.proc.kill()
            s.proc.wait(timeout=10)
        if not s.log.closed:
            s.log.close()

    def sigstop(self, node):
        self.servers[node].proc.send_signal(signal.SIGSTOP)

    def sigcont(self, node):
        s = self.servers.get(node)
        if s is not None and s.proc is not None and s.proc.poll() is None:
            s.proc.send_signal(signal.SIGCONT)

    def stop(self, node, timeout=15.0):
        """SIGTERM (after SIGCONT, in case it is stopped); the exit status."""
        s = self.servers.get(node)
        if s is None or s.proc is None:
            return None
        self.sigcont(node)
        code, _ = s.stop(timeout=timeout)
        return code

    def stop_running_checked(self):
        """SIGTERM every node still running and check that each exits 0 (a sanitizer build
        exits non-zero on an error it found, so this is also the nodes' sanitizer check).
        The primary goes last, as an operator stops a group: no replica is left redialling a
        primary that is going away."""
        try:
            primary = self.primary()[0]
        except Exception:  # noqa: BLE001 - etcd may be gone: any order will do
            primary = None
        for n in sorted(NODE_IDS, key=lambda n: n == primary):
            if self.running(n):
                code = self.stop(n)
                gslib.check(code == 0, "%s exits 0 on SIGTERM (got %s); its log ends:\n%s" %
                            (n, code, self.log_tail(n, 3000) if code != 0 else ""))

    def stop_all(self):
        for n in NODE_IDS:
            try:
                self.stop(n)
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass

    def cleanup(self):
        for s in self.servers.values():
            s.cleanup()

    def log_tail(self, node, n=4000):
        s = self.servers.get(node)
        return s.read_log()[-n:] if s else ""

    # ---- observation ----

    def group(self):
        """The group state in etcd (dict) or None."""
        v = self.etcd.get(GROUP_KEY)
        return json.loads(v) if v else None

    def primary(self):
        """(nodeId, term as int) from etcd, or (None, term)."""
        g = self.group()
        if not g:
            return None, 0
        cp = g.get("currentPrimary")
        return (cp.get("nodeId") if cp else None), int(g.get("primaryTerm", "0"))

    def ready(self, node, timeout=3.0):
        """GET /health/ready of node: (status, body) or (None, None)."""
        try:
            st, b, _ = http_json(self.http[node], "GET", "/health/ready", timeout=timeout)
            return st, b
        except (OSError, http.client.HTTPException):
            return None, None

    def cluster_info(self, node, timeout=3.0):
        try:
            st, b, _ = http_json(self.http[node], "GET", "/db/main/cluster", timeout=timeout)
            return st, b
        except (OSError, http.client.HTTPException):
            return None, None

    def writable(self, node):
        st, b = self.ready(node)
        return bool(b) and (b.get("replication") or {}).get("writeAvailability") == "available"

    def post(self, node, path, body, timeout=10.0):
        return http_json(self.http[node], "POST", path, body, timeout=timeout)

    def execute(self, node, sql, params=None, concern=None, timeout_ms=None, timeout=10.0):
        body = {"sql": sql}
        if params is not None:
            body["params"] = params
        if concern:
            body["writeConcern"] = {"level": concern}
            if timeout_ms:
                body["writeConcern"]["timeoutMs"] = timeout_ms
        return self.post(node, "/db/main/execute", body, timeout=timeout)

    def query(self, node, sql, params=None, concern=None, timeout=10.0):
        body = {"sql": sql}
        if params is not None:
            body["params"] = params
        if concern:
            body["readConcern"] = {"level": concern}
        return self.post(node, "/db/main/query", body, timeout=timeout)

    def keys(self, node, concern="local"):
        """The ids in t on node (a set) or None when it cannot be read."""
        try:
            st, b, _ = self.query(node, "SELECT id FROM t ORDER BY id", concern=concern)
        except (OSError, http.client.HTTPException):
            return None
        if st != 200:
            return None
        return {r["id"] for r in b["rows"]}

    def cli(self, *args, timeout=60):
        """Run `gatestream cluster ARGS`; (exit status, stdout, stderr)."""
        env = dict(os.environ)
        if gslib.PLUGIN_DIR:
            env["GS_PLUGIN_DIR"] = gslib.PLUGIN_DIR
        p = subprocess.run([gslib.GATESTREAM, "cluster"] + list(args), capture_output=True,
                           text=True, timeout=timeout, env=env)
        return p.returncode, p.stdout, p.stderr

    # ---- composite waits ----

    def wait_primary(self, timeout, not_node=None, min_term=0):
        """Wait until etcd names a primary (other than not_node, at a term >= min_term) that
        reports itself writable; (nodeId, term) or (None, 0)."""
        def ok():
            p, t = self.primary()
            if p and p != not_node and t >= min_term and self.running(p) and self.writable(p):
                return p, t
            return None
        r = wait_for(ok, timeout, 0.05)
        return r or (None, 0)

    def healthy_state(self, nodes=None):
        """True when the group has a writable primary and every node of `nodes` (default:
        the running ones) is in the in-sync set and in none of the maintenance sets."""
        g = self.group()
        if not g or not g.get("currentPrimary"):
            return False
        nodes = nodes or [n for n in NODE_IDS if self.running(n)]
        for n in nodes:
            if n not in g.get("inSyncNodeIds", []):
                return False
            for s in ("drainingNodeIds", "repairingNodeIds", "faultedNodeIds"):
                if n in g.get(s, []):
                    return False
        p = g["currentPrimary"]["nodeId"]
        return self.running(p) and self.writable(p)

    def heal(self, timeout=60.0):
        """Bring every node back: start the stopped ones, `cluster rejoin` a faulted or
        repairing one that stays so, undrain; True when healthy within timeout."""
        deadline = time.time() + timeout
        for n in NODE_IDS:
            self.sigcont(n)
            if not self.running(n):
                self.start(n)
        g = self.group() or {}
        for n in g.get("drainingNodeIds", []):
            self.cli("undrain", "--config", self.config[n], "--node", n)
        restarted = set()
        t0 = time.time()
        while time.time() < deadline:
            if self.healthy_state(NODE_IDS):
                return True
            g = self.group() or {}
            for n in g.get("faultedNodeIds", []):
                self.cli("rejoin", "--config", self.config[n], "--node", n)
            # last resort: a running node left out of the in-sync set for 20 s is restarted
            if time.time() - t0 > 20 and g:
                for n in NODE_IDS:
                    if (n not in restarted and n not in g.get("inSyncNodeIds", []) and
                            n not in g.get("faultedNodeIds", [])):
                        print("heal: %s stayed out of the in-sync set for 20 s; restarting it" %
                              n, flush=True)
                        restarted.add(n)
                        self.stop(n)
                        self.start(n)
            time.sleep(0.2)
        return False
