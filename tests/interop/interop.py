"""gatestream against a node of the Sirannon reference implementation over gRPC with mutual TLS.

Run by run_reference.sh (which builds the reference and makes the certificates); see README.md.
Environment: GS_BINARY (the gatestream binary), GS_PLUGIN_DIR (its plugins), GS_INTEROP_CERTS
(the output of config/cluster/static-grpc/make-certs.sh), GS_INTEROP_NODE (node binary).

Scenarios, each ending in one PASS or FAIL line with the reason:
  a   gatestream primary, reference replica: first sync of a populated primary (three tables,
      int64 beyond 2^53, doubles, unicode text, blobs, NULL), then streamed inserts, updates,
      deletes and a table created live; rows compared (value and storage class) from both files
  b   reference primary, gatestream replica: the same in the other direction
  c   forwarded writes: reference replica -> gatestream primary, gatestream replica ->
      reference primary (a single write, a multi-statement forward, a failing write)
  d   a peer whose certificate CN is not its node id, refused in both directions
  e   a replica of one implementation stopped while its primary (the other) takes writes, then
      restarted on its database: it reports its position and catches up without a new sync
Every wait is bounded; the exit status is non-zero when any scenario fails."""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from gslib import Server, free_port  # noqa: E402

CERTS = os.environ["GS_INTEROP_CERTS"]
NODE = os.environ.get("GS_INTEROP_NODE", "node")
KEEP = os.environ.get("GS_INTEROP_KEEP") == "1"
WAIT = float(os.environ.get("GS_INTEROP_WAIT", "60"))

tmp = tempfile.mkdtemp(prefix="gs-interop-")
tempfile.tempdir = tmp  # gslib's per-server folders (config, log) go inside it too
results = []


def log(msg):
    print("  " + msg, flush=True)


class Failure(Exception):
    pass


def need(cond, why):
    if not cond:
        raise Failure(why)


def wait_for(pred, what, timeout=WAIT, interval=0.2):
    """Poll pred() until it returns a true value; Failure naming `what` after timeout."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
        except Failure:
            raise
        except Exception as e:  # noqa: BLE001 - a node still starting answers with errors
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise Failure("%s: not within %.0f s (last: %r)" % (what, timeout, last))


# ---- data: every value type the wire carries ----

INT64 = [2**53 + 1, -(2**53) - 7, 2**63 - 1, -(2**63), 0, 1, -1, 123456789012345678]
REALS = [3.141592653589793, -0.5, 1e-7, 2.0, 0.1, -1234.5678, 2.5e-300, 5e-324, -0.0]
# Whole doubles beyond the int64 range: the reference encodes every whole JavaScript number as
# ColumnValue.int_value and fails on these ("value provided for field message.intValue of type
# int64 too large"), so only the gatestream side writes them (README, "Known differences").
WIDE_REALS = [6.02214076e23, 1.5e300, -1e19]
# Whole doubles in a column without type affinity: the reference sends them as int_value too, so
# its replica-side copy (and ours, from it) holds INTEGER where the primary holds REAL. Written
# only on the gatestream side for the same reason (README, "Known differences").
WHOLE_REALS_UNTYPED = [("real-two", 2.0), ("real-neg-zero", -0.0), ("real-1e15", 1e15)]
TEXTS = ["plain", "héllo wörld", "日本語のテキスト", "emoji 😀🎉", "quote \" and \\ backslash",
         "line\nbreak\ttab", "ctl \x01\x1f end", "", "A" * 300]
BLOBS = [b"\x00\x01\x02\xff\xfe", b"", bytes(range(256)), b"\x00", "utf8 ✓".encode()]

SCHEMA = [
    "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, price REAL, data BLOB,"
    " note TEXT)",
    "CREATE TABLE kv (k TEXT PRIMARY KEY, v)",
    "CREATE TABLE pairs (a INTEGER NOT NULL, b TEXT NOT NULL, w REAL, PRIMARY KEY (a, b))",
]
TABLES = {"items": "id", "kv": "k", "pairs": "a, b"}


def kv_value(i):
    """The untyped column cycles through every storage class."""
    pool = [INT64[i % len(INT64)], REALS[i % len(REALS)], TEXTS[i % len(TEXTS)],
            BLOBS[i % len(BLOBS)], None]
    return pool[i % len(pool)]


def initial_writes(wide=False):
    """(sql, params) of the first population; wide adds whole doubles beyond int64."""
    w = []
    if wide:
        for i, d in enumerate(WIDE_REALS):
            w.append(("INSERT INTO kv (k, v) VALUES (?, ?)", ["wide-%d" % i, d]))
            w.append(("INSERT INTO pairs (a, b, w) VALUES (?, ?, ?)", [i, "wide", d]))
        for name, d in WHOLE_REALS_UNTYPED:
            w.append(("INSERT INTO kv (k, v) VALUES (?, ?)", [name, d]))
    for i in range(1, 31):
        w.append(("INSERT INTO items (id, name, qty, price, data, note) VALUES (?, ?, ?, ?, ?, ?)",
                  [i, TEXTS[i % len(TEXTS)], INT64[i % len(INT64)], REALS[i % len(REALS)],
                   BLOBS[i % len(BLOBS)], None if i % 3 else "note %d" % i]))
    for i in range(15):
        w.append(("INSERT INTO kv (k, v) VALUES (?, ?)", ["key-%02d-ключ" % i, kv_value(i)]))
    for i in range(10):
        w.append(("INSERT INTO pairs (a, b, w) VALUES (?, ?, ?)",
                  [INT64[i % len(INT64)], "b-%d-ü" % i, REALS[(i + 3) % len(REALS)]]))
    return w


def streamed_writes():
    """(sql, params) after the first sync: inserts, updates, deletes, a live table."""
    w = []
    for i in range(31, 41):
        w.append(("INSERT INTO items (id, name, qty, price, data, note) VALUES (?, ?, ?, ?, ?, ?)",
                  [i, TEXTS[(i + 1) % len(TEXTS)], INT64[(i + 2) % len(INT64)],
                   REALS[(i + 4) % len(REALS)], BLOBS[(i + 1) % len(BLOBS)], "streamed"]))
    for i in (2, 5, 7, 33):
        w.append(("UPDATE items SET qty = ?, name = ?, data = ?, price = ? WHERE id = ?",
                  [2**62 + i, "updated ✓ %d" % i, bytes([i, 0, 255 - i]), -0.25 * i, i]))
    w.append(("UPDATE items SET note = NULL, data = NULL WHERE id = 3", []))
    for i in (4, 6, 35):
        w.append(("DELETE FROM items WHERE id = ?", [i]))
    for i in (1, 2, 3, 4):  # change the storage class of the untyped column
        w.append(("UPDATE kv SET v = ? WHERE k = ?", [kv_value(i + 1), "key-%02d-ключ" % i]))
    w.append(("DELETE FROM kv WHERE k = ?", ["key-09-ключ"]))
    w.append(("INSERT INTO kv (k, v) VALUES (?, ?)", ["new-😀", 2**53 + 3]))
    w.append(("UPDATE pairs SET w = ? WHERE b = ?", [9.75, "b-1-ü"]))
    w.append(("DELETE FROM pairs WHERE b = ?", ["b-2-ü"]))
    w.append(("INSERT INTO pairs (a, b, w) VALUES (?, ?, ?)", [-(2**63), "min", None]))
    return w


LIVE_TABLE = "CREATE TABLE live_t (id INTEGER PRIMARY KEY, payload BLOB, label TEXT)"
LIVE_ROWS = [("INSERT INTO live_t (id, payload, label) VALUES (?, ?, ?)",
              [i, bytes([i]) * i, "live %d ✓" % i]) for i in range(1, 6)]


# ---- encoding values for each side's API ----

def gs_param(v):
    """gatestream HTTP: the spec's tagged value encoding (02-core, 05-server)."""
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and not -(2**53 - 1) <= v <= 2**53 - 1:
        return {"__sirannon_int": str(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"__sirannon_blob": bytes(v).hex().upper()}
    return v


def ref_param(v):
    """reference_node.mjs: {"int"}, {"real"}, {"blob"} tags (see its header)."""
    import base64
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return {"int": str(v)}
    if isinstance(v, float):
        return {"real": repr(v)}
    if isinstance(v, (bytes, bytearray)):
        return {"blob": base64.b64encode(bytes(v)).decode()}
    return v


# ---- the two kinds of node ----

def gs_yaml(node_id, role, data_dir, http_port, grpc_port, cert, primary_addr=None, peers=()):
    if role == "primary":
        tpeers = ""
        rpeers = "\n".join("    - { id: %s, role: replica }" % p for p in peers)
        port_line = "      port: %d" % grpc_port
    else:
        tpeers = "      peers:\n        - { id: node-a, address: %s }" % primary_addr
        rpeers = "    - { id: node-a, role: primary }"
        port_line = ""
    return """
node: {{ id: {id}, data_dir: {data_dir} }}
log: {{ level: {log_level} }}
plugins:
  - name: http
    kind: client_transport
  - name: repl
    kind: repl_transport
    plugin: grpc
    config:
      host: 127.0.0.1
{port_line}
      tls_cert: {certs}/{cert}.pem
      tls_key: {certs}/{cert}.key
      tls_ca_cert: {certs}/ca.pem
      reconnect_min_ms: 100
      reconnect_max_ms: 1000
      forward_deadline_ms: 10000
{tpeers}
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
{rpeers}
""".format(id=node_id, data_dir=data_dir, port_line=port_line, certs=CERTS, cert=cert,
           tpeers=tpeers, http_port=http_port, role=role, rpeers=rpeers,
           log_level=os.environ.get("GS_INTEROP_LOG_LEVEL", "info"))


def gs_node(node_id, role, cert=None, grpc_port=0, primary_addr=None, peers=()):
    data_dir = os.path.join(tmp, "gs-" + node_id + "-" + role)
    os.makedirs(data_dir, exist_ok=True)
    port = free_port()
    text = gs_yaml(node_id, role, data_dir, port, grpc_port, cert or node_id, primary_addr, peers)
    srv = Server(yaml_text=text, port=port, data_dir=data_dir)
    srv.db_path = os.path.join(data_dir, "main.db")
    srv.kind = "gatestream " + node_id
    srv.grpc_port = grpc_port
    return srv


def gs_exec(srv, sql, params=()):
    st, body, _ = srv.post("/db/main/execute",
                           {"sql": sql, "params": [gs_param(p) for p in params]}, timeout=30.0)
    return st, body


class RefNode:
    """One reference_node.mjs process."""

    def __init__(self, node_id, role, cert=None, grpc_port=0, peer=None, schema=None):
        self.node_id = node_id
        self.role = role
        self.dir = os.path.join(tmp, "ref-" + node_id + "-" + role)
        os.makedirs(self.dir, exist_ok=True)
        self.db_path = os.path.join(self.dir, "main.db")
        self.out_path = os.path.join(self.dir, "stdout.log")
        self.err_path = os.path.join(self.dir, "stderr.log")
        self.kind = "reference " + node_id
        cert = cert or node_id
        self.argv = [NODE, os.path.join(HERE, "reference_node.mjs"), "--role", role,
                     "--node-id", node_id, "--db", self.db_path,
                     "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port),
                     "--cert", os.path.join(CERTS, cert + ".pem"),
                     "--key", os.path.join(CERTS, cert + ".key"),
                     "--ca", os.path.join(CERTS, "ca.pem"),
                     "--write-forwarding", "--forward-deadline-ms", "10000"]
        if peer:
            self.argv += ["--peer", peer]
        if schema:
            path = os.path.join(self.dir, "schema.sql")
            with open(path, "w") as f:
                f.write(";\n".join(schema) + ";\n")
            self.argv += ["--schema", path]
        self.proc = None
        self.control = None
        self.grpc_port = None

    def start(self, timeout=30.0):
        # a restarted node appends to the same logs: look for its ready line after this point
        offset = os.path.getsize(self.out_path) if os.path.exists(self.out_path) else 0
        self.out = open(self.out_path, "ab")
        self.err = open(self.err_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=self.err, cwd=HERE)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure("%s exited with %s: %s" % (self.kind, self.proc.returncode,
                                                         self.read_err()[-2000:]))
            for line in self.read_out()[offset:].splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if ev.get("event") == "ready":
                    self.control = ev["controlPort"]
                    self.grpc_port = ev["grpcPort"]
                    return self
            time.sleep(0.05)
        raise Failure("%s did not start within %.0f s: %s" % (self.kind, timeout,
                                                             self.read_err()[-2000:]))

    def read_out(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def read_err(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def read_log(self):
        return self.read_out() + self.read_err()

    def call(self, method, path, body=None, timeout=30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.control, path), data=data,
                                     method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def status(self):
        return self.call("GET", "/status")[1]

    def exec(self, sql, params=()):
        return self.call("POST", "/execute", {"sql": sql, "params": [ref_param(p) for p in params]})

    def stop(self, timeout=15.0):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            self.call("POST", "/stop", {}, timeout=5.0)
        except OSError:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.out.close()
        self.err.close()
        return self.proc.returncode


# ---- comparing the two files ----

def snapshot(db_path, tables):
    """Every row of each table, each value with its storage class, in primary-key order."""
    if not os.path.exists(db_path):
        return None
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True, timeout=5.0)
    try:
        out = {}
        have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for t, order in tables.items():
            if t not in have:
                out[t] = None
                continue
            cols = [r[1] for r in con.execute("PRAGMA table_info(%s)" % t)]
            sel = ", ".join("%s, typeof(%s)" % (c, c) for c in cols)
            q = "SELECT %s FROM %s ORDER BY %s" % (sel, t, order)
            out[t] = (cols, con.execute(q).fetchall())
        return out
    finally:
        con.close()


def describe_diff(want, got):
    for t in want:
        if (got or {}).get(t) is None:
            return "table %s missing on the replica" % t
        wc, wr = want[t]
        gc, gr = got[t]
        if wc != gc:
            return "table %s columns %s vs %s" % (t, wc, gc)
        if len(wr) != len(gr):
            return "table %s: %d rows on the primary, %d on the replica" % (t, len(wr), len(gr))
        for a, b in zip(wr, gr):
            if a != b:
                return "table %s first differing row: primary %r, replica %r" % (t, a, b)
    return "equal"


def converge(primary, replica, tables, what, timeout=WAIT):
    last = [None]

    def same():
        want, got = snapshot(primary.db_path, tables), snapshot(replica.db_path, tables)
        if want is None or any(want[t] is None for t in tables):
            last[0] = "primary lacks a table"
            return False
        last[0] = describe_diff(want, got)
        return want == got
    try:
        wait_for(same, what, timeout)
    except Failure:
        raise Failure("%s: %s" % (what, last[0]))
    want = snapshot(primary.db_path, tables)
    return sum(len(want[t][1]) for t in tables)


def sanitizer_clean(*nodes):
    for n in nodes:
        text = n.read_log()
        for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
            if marker in text:
                i = text.index(marker)
                raise Failure("%s log holds a sanitizer report: %s" % (n.kind, text[i:i + 600]))


def check_types_preserved(db_path):
    """The interesting values survived with their storage class (not only equal across nodes)."""
    con = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        r = con.execute("SELECT qty, typeof(qty) FROM items WHERE id = 1").fetchone()
        need(r == (INT64[1], "integer"), "items.qty of id 1 is %r, want %r" % (r, INT64[1]))
        r = con.execute("SELECT typeof(v), v FROM kv WHERE k = 'new-😀'").fetchone()
        need(r == ("integer", 2**53 + 3), "kv new-😀 is %r" % (r,))
        r = con.execute("SELECT data FROM items WHERE id = 12").fetchone()
        need(r and r[0] == BLOBS[12 % len(BLOBS)], "items.data of id 12 is %r" % (r,))
        r = con.execute("SELECT name FROM items WHERE id = 3").fetchone()
        need(r and r[0] == TEXTS[3], "items.name of id 3 is %r" % (r,))
    finally:
        con.close()


def record(name, ok, reason):
    results.append((name, ok, reason))
    print("%s %s: %s" % ("PASS" if ok else "FAIL", name, reason), flush=True)


def run(name, fn, *args):
    t0 = time.time()
    try:
        reason = fn(*args)
        record(name, True, "%s (%.1f s)" % (reason, time.time() - t0))
    except Failure as e:
        record(name, False, str(e))
    except Exception as e:  # noqa: BLE001 - report and go on with the next scenario
        traceback.print_exc()
        record(name, False, "%s: %s" % (type(e).__name__, e))


# ---- scenarios ----

ALL_TABLES = dict(TABLES, live_t="id")


def deployment_gs_primary():
    """(a), (c) reference replica -> gatestream primary, (d) reference node with a wrong CN."""
    a = gs_node("node-a", "primary", grpc_port=free_port(), peers=("node-b", "node-c"))
    started = [a]
    ref_b = None
    try:
        a.start()
        for sql in SCHEMA:
            st, b = gs_exec(a, sql)
            need(st == 200, "gatestream primary: %s: %s %s" % (sql, st, b))
        for sql, params in initial_writes(wide=True):
            st, b = gs_exec(a, sql, params)
            need(st == 200, "gatestream primary: %s %s: %s %s" % (sql, params, st, b))
        addr = "127.0.0.1:%d" % a.grpc_port

        def scenario_a():
            nonlocal ref_b
            ref_b = RefNode("node-b", "replica", peer=addr)
            started.append(ref_b)
            ref_b.start()
            wait_for(lambda: (ref_b.status() or {}).get("phase") == "ready",
                     "reference replica reaches ready after its first sync")
            n0 = converge(a, ref_b, TABLES, "first sync")
            for sql, params in streamed_writes():
                st, b = gs_exec(a, sql, params)
                need(st == 200, "gatestream primary: %s: %s %s" % (sql, st, b))
            st, b = gs_exec(a, LIVE_TABLE)
            need(st == 200, "gatestream primary: live CREATE TABLE: %s %s" % (st, b))
            for sql, params in LIVE_ROWS:
                st, b = gs_exec(a, sql, params)
                need(st == 200, "gatestream primary: %s: %s %s" % (sql, st, b))
            n1 = converge(a, ref_b, ALL_TABLES, "streamed changes")
            check_types_preserved(ref_b.db_path)
            errs = ref_b.status().get("errors")
            need(not errs, "the reference replica reported replication errors: %s" % errs)
            sanitizer_clean(a)
            return ("first sync of %d rows in 3 tables, then %d rows after streamed inserts, "
                    "updates, deletes and a live CREATE TABLE; equal with storage classes"
                    % (n0, n1))

        run("a gatestream primary -> reference replica", scenario_a)

        def scenario_c1():
            need(ref_b is not None and ref_b.proc.poll() is None, "no reference replica running")
            st, b = ref_b.exec("INSERT INTO items (id, name, qty, price, data, note) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               [1001, "forwarded ✓", 2**60 + 1, 0.125, b"\x00fw", None])
            need(st == 200 and b.get("changes") == 1,
                 "reference replica execute (forwarded): %s %s" % (st, b))
            need(b.get("lastInsertRowId") == {"int": "1001"},
                 "lastInsertRowId of the forwarded insert is %s" % b.get("lastInsertRowId"))
            st, b = ref_b.call("POST", "/forward", {"statements": [
                {"sql": "INSERT INTO kv (k, v) VALUES (?, ?)", "params": ["fw-1", {"int": "-5"}]},
                {"sql": "INSERT INTO kv (k, v) VALUES (?, ?)",
                 "params": ["fw-2", {"blob": "AAEC"}]},
                {"sql": "UPDATE items SET note = ? WHERE id = ?", "params": ["fw note", 1001]},
            ]})
            need(st == 200 and [r["changes"] for r in b.get("results", [])] == [1, 1, 1],
                 "multi-statement forward: %s %s" % (st, b))
            st, b = ref_b.exec("INSERT INTO items (id, name) VALUES (?, ?)", [1001, "dup"])
            need(st != 200 and "UNIQUE" in json.dumps(b),
                 "a failing forwarded write should fail with the primary's error: %s %s" % (st, b))
            log("reference replica's answer to a failing forwarded write: %s" % json.dumps(b))
            con = sqlite3.connect("file:%s?mode=ro" % a.db_path, uri=True)
            row = con.execute("SELECT name, qty, note FROM items WHERE id = 1001").fetchone()
            con.close()
            need(row == ("forwarded ✓", 2**60 + 1, "fw note"), "primary row 1001: %r" % (row,))
            converge(a, ref_b, ALL_TABLES, "forwarded writes come back to the reference replica")
            sanitizer_clean(a)
            return ("reference replica -> gatestream primary: one write (changes 1, "
                    "lastInsertRowId 1001), a 3-statement forward, a UNIQUE failure reported; "
                    "rows back on the replica")

        run("c1 forwarded writes reference replica -> gatestream primary", scenario_c1)

        def scenario_d1():
            # node-c is a replica the primary lists, but this process presents node-b's
            # certificate: CN node-b claims node id node-c.
            intruder = RefNode("node-c", "replica", cert="node-b", peer=addr)
            started.append(intruder)
            intruder.start()
            marker = "CN 'node-b' does not match the Hello's node_id 'node-c'"
            wait_for(lambda: marker in a.read_log(), "gatestream refuses the wrong CN", 20)
            time.sleep(1.0)  # room for a wrongly accepted link to show (bounded, not a wait)
            st = intruder.status()
            need(st.get("phase") != "ready" and "node-a" not in st.get("transportPeers", []),
                 "the intruder got a link: %s" % st)
            snap = snapshot(intruder.db_path, {"items": "id"})
            need(snap is None or snap["items"] is None, "the intruder has the items table")
            need("peer node-c connected" not in a.read_log(), "gatestream saw node-c connect")
            intruder.stop()
            return "gatestream primary refused a reference node whose CN node-b claimed node-c"

        run("d1 wrong CN: reference replica refused by gatestream primary", scenario_d1)

        def scenario_e1():
            nonlocal ref_b
            need(ref_b is not None and ref_b.proc.poll() is None, "no reference replica running")
            code = ref_b.stop()
            need(code == 0, "the reference replica exited with %s" % code)
            for i in range(3001, 3021):
                st, b = gs_exec(a, "INSERT INTO items (id, name, qty) VALUES (?, ?, ?)",
                                [i, "while down %d" % i, 2**55 + i])
                need(st == 200, "gatestream primary insert: %s %s" % (st, b))
            st, b = gs_exec(a, "DELETE FROM items WHERE id = ?", [1])
            need(st == 200, "gatestream primary delete: %s %s" % (st, b))
            ref_b = RefNode("node-b", "replica", peer=addr)
            started.append(ref_b)
            ref_b.start()
            n = converge(a, ref_b, ALL_TABLES, "the restarted reference replica catches up")
            need("first sync" not in json.dumps(ref_b.status().get("errors")),
                 "the restarted replica reported sync errors")
            sanitizer_clean(a)
            return ("the reference replica restarted on its database (position report on "
                    "connect) and caught up to %d rows without a new first sync" % n)

        run("e1 restart: reference replica resumes from a gatestream primary", scenario_e1)
    except Exception as e:  # noqa: BLE001 - a node that cannot start fails the deployment
        record("deployment with a gatestream primary", False, "%s: %s" % (type(e).__name__, e))
    finally:
        for n in reversed(started):
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


def deployment_ref_primary():
    """(b), (c) gatestream replica -> reference primary, (d) gatestream node with a wrong CN."""
    ref_a = RefNode("node-a", "primary", grpc_port=free_port(), schema=SCHEMA)
    started = [ref_a]
    gs_b = None
    try:
        ref_a.start()
        for sql, params in initial_writes():
            st, b = ref_a.exec(sql, params)
            need(st == 200, "reference primary: %s %s: %s %s" % (sql, params, st, b))
        addr = "127.0.0.1:%d" % ref_a.grpc_port

        def scenario_b():
            nonlocal gs_b
            gs_b = gs_node("node-b", "replica", primary_addr=addr)
            started.append(gs_b)
            gs_b.start()
            n0 = converge(ref_a, gs_b, TABLES, "first sync")
            for sql, params in streamed_writes():
                st, b = ref_a.exec(sql, params)
                need(st == 200, "reference primary: %s: %s %s" % (sql, st, b))
            st, b = ref_a.exec(LIVE_TABLE)
            need(st == 200, "reference primary: live CREATE TABLE: %s %s" % (st, b))
            st, b = ref_a.call("POST", "/watch", {"table": "live_t"})
            need(st == 200, "reference primary: watch live_t: %s %s" % (st, b))
            for sql, params in LIVE_ROWS:
                st, b = ref_a.exec(sql, params)
                need(st == 200, "reference primary: %s: %s %s" % (sql, st, b))
            n1 = converge(ref_a, gs_b, ALL_TABLES, "streamed changes")
            check_types_preserved(gs_b.db_path)
            errs = ref_a.status().get("errors")
            need(not errs, "the reference primary reported replication errors: %s" % errs)
            sanitizer_clean(gs_b)
            return ("first sync of %d rows in 3 tables, then %d rows after streamed inserts, "
                    "updates, deletes and a live CREATE TABLE; equal with storage classes"
                    % (n0, n1))

        run("b reference primary -> gatestream replica", scenario_b)

        def scenario_c2():
            need(gs_b is not None and gs_b.proc.poll() is None, "no gatestream replica running")
            st, b = gs_exec(gs_b, "INSERT INTO items (id, name, qty, price, data, note) "
                                  "VALUES (?, ?, ?, ?, ?, ?)",
                            [2001, "forwarded ✓", 2**60 + 1, 0.125, b"\x00fw", None])
            need(st == 200 and b.get("changes") == 1,
                 "gatestream replica execute (forwarded): %s %s" % (st, b))
            need(b.get("lastInsertRowId") == 2001,
                 "lastInsertRowId of the forwarded insert is %s" % b.get("lastInsertRowId"))
            st, b, _ = gs_b.post("/db/main/batch", {
                "sql": "INSERT INTO kv (k, v) VALUES (?, ?)",
                "paramsBatch": [["fw-1", -5], ["fw-2", {"__sirannon_blob": "000102"}]]})
            need(st == 200, "gatestream replica batch (forwarded): %s %s" % (st, b))
            st, b = gs_exec(gs_b, "INSERT INTO items (id, name) VALUES (?, ?)", [2001, "dup"])
            need(st != 200 and "UNIQUE" in json.dumps(b),
                 "a failing forwarded write should fail with the primary's error: %s %s" % (st, b))
            log("gatestream replica's answer to a failing forwarded write: HTTP %d %s"
                % (st, json.dumps(b, ensure_ascii=False)))
            con = sqlite3.connect("file:%s?mode=ro" % ref_a.db_path, uri=True)
            row = con.execute("SELECT name, qty, data FROM items WHERE id = 2001").fetchone()
            kv = con.execute("SELECT k, v FROM kv WHERE k LIKE 'fw-%' ORDER BY k").fetchall()
            con.close()
            need(row == ("forwarded ✓", 2**60 + 1, b"\x00fw"), "primary row 2001: %r" % (row,))
            need(kv == [("fw-1", -5), ("fw-2", b"\x00\x01\x02")], "primary kv fw-*: %r" % (kv,))
            converge(ref_a, gs_b, ALL_TABLES,
                     "forwarded writes come back to the gatestream replica")
            sanitizer_clean(gs_b)
            return ("gatestream replica -> reference primary: one write (changes 1, "
                    "lastInsertRowId 2001), a 2-row batch, a UNIQUE failure reported; "
                    "rows back on the replica")

        run("c2 forwarded writes gatestream replica -> reference primary", scenario_c2)

        def scenario_d2():
            intruder = gs_node("node-c", "replica", cert="node-b", primary_addr=addr)
            started.append(intruder)
            intruder.start()
            wait_for(lambda: "no link to node-a" in intruder.read_log()
                     or "refused" in intruder.read_log(),
                     "the gatestream intruder logs that it has no link", 20)
            time.sleep(1.0)  # room for a wrongly accepted link to show (bounded, not a wait)
            st = ref_a.status()
            need("node-c" not in st.get("transportPeers", []),
                 "the reference primary lists node-c as a peer: %s" % st.get("transportPeers"))
            snap = snapshot(intruder.db_path, {"items": "id"})
            need(snap is None or snap["items"] is None, "the intruder has the items table")
            need("peer node-a connected" not in intruder.read_log(),
                 "the intruder logged a link to node-a")
            sanitizer_clean(intruder)
            code, _ = intruder.stop()
            need(code == 0, "the intruder exited with %s" % code)
            return "reference primary refused a gatestream node whose CN node-b claimed node-c"

        run("d2 wrong CN: gatestream replica refused by reference primary", scenario_d2)

        def scenario_e2():
            nonlocal gs_b
            need(gs_b is not None and gs_b.proc.poll() is None, "no gatestream replica running")
            code, _ = gs_b.stop()
            need(code == 0, "the gatestream replica exited with %s" % code)
            for i in range(4001, 4021):
                st, b = ref_a.exec("INSERT INTO items (id, name, qty) VALUES (?, ?, ?)",
                                   [i, "while down %d" % i, 2**55 + i])
                need(st == 200, "reference primary insert: %s %s" % (st, b))
            st, b = ref_a.exec("DELETE FROM items WHERE id = ?", [1])
            need(st == 200, "reference primary delete: %s %s" % (st, b))
            gs_b = gs_node("node-b", "replica", primary_addr=addr)
            started.append(gs_b)
            gs_b.start()
            n = converge(ref_a, gs_b, ALL_TABLES, "the restarted gatestream replica catches up")
            need("first sync requested" not in gs_b.read_log(),
                 "the restarted gatestream replica ran a new first sync")
            sanitizer_clean(gs_b)
            return ("the gatestream replica restarted on its database (position report on "
                    "connect) and caught up to %d rows without a new first sync" % n)

        run("e2 restart: gatestream replica resumes from a reference primary", scenario_e2)
    except Exception as e:  # noqa: BLE001 - a node that cannot start fails the deployment
        record("deployment with a reference primary", False, "%s: %s" % (type(e).__name__, e))
    finally:
        for n in reversed(started):
            try:
                n.stop()
            except Exception:  # noqa: BLE001 - best effort cleanup
                pass


def main():
    only = set(sys.argv[1:])
    t0 = time.time()
    try:
        if not only or only & {"a", "c", "d", "e", "gs-primary"}:
            deployment_gs_primary()
        if not only or only & {"b", "c", "d", "e", "ref-primary"}:
            deployment_ref_primary()
    finally:
        if KEEP or any(not ok for _, ok, _ in results):
            print("logs and databases kept in %s" % tmp, flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    failed = sum(1 for _, ok, _ in results if not ok)
    print("%d passed, %d failed (%.1f s)" % (len(results) - failed, failed, time.time() - t0),
          flush=True)
    sys.exit(1 if failed or not results else 0)


if __name__ == "__main__":
    main()
