"""Per-table replication modes (databases[].tables) across three gatestream processes over the
tcp transport with mutual TLS on loopback: a central primary and two edge replicas, each mode
used the way config/cluster/edge uses it.

Checked, per mode: a write on the owning side appears on the pulling side (replica, readonly,
primary on the edge, writeonly, sync both ways); a write on a readonly side is refused with
TOPOLOGY_ERROR; a writeonly side ignores remote changes; excluded tables stay put; a write to
a replica table at an edge is forwarded (edge1) or refused (edge2, write_proxy: reject); a
conflicting update of a sync table converges; the first sync of a late edge copies only the
tables it pulls and keeps its own; a tables list with a coordinator is refused at start-up.

Certificates come from config/cluster/edge/make-certs.sh at test time. Ports are ephemeral;
every wait is bounded."""
import os
import shutil
import sqlite3
import subprocess
import time

from gslib import check, error_code, finish
from static_cluster import StaticCluster, sql, wait_log

EDGES = ["edge1", "edge2"]

cluster = StaticCluster(
    "tcp", "central", EDGES, prefix="gs-tmodes-it-", certs_from="edge",
    cert_names=["central", "edge1", "edge2"],
    transport_options="heartbeat_ms: 300\nreconnect_min_ms: 50\nreconnect_max_ms: 500",
    replication="batch_interval_ms: 20")
work, REPL_PORT = cluster.work, cluster.repl_port

CENTRAL_TABLES = """
      - { match: files, mode: readonly }
      - { match: "audit_*", mode: primary }
      - { match: settings, mode: sync }
      - { match: telemetry, mode: sync }
      - { match: "scratch_*", mode: excluded }"""
EDGE_TABLES = """
      - { match: files, mode: primary }
      - { match: "audit_*", mode: readonly }
      - { match: settings, mode: sync }
      - { match: telemetry, mode: writeonly }
      - { match: accounts, mode: replica }
      - { match: "scratch_*", mode: excluded }"""


def start_node(node_id, proxy="forward"):
    """node_id started with its write_proxy and its side's table modes."""
    tables = CENTRAL_TABLES if node_id == "central" else EDGE_TABLES
    return cluster.start(node_id, databases="    write_proxy: %s\n    tables:%s" %
                         (proxy, tables))


def ok(srv, statement, params=None):
    st, body, _ = sql(srv, statement, params)
    check(st == 200, "%s on %s: %s %s" % (statement, srv.config, st, body))
    return body


def rows(srv, statement):
    try:
        st, body, _ = sql(srv, statement, timeout=10.0)
    except OSError:
        return None
    return body.get("rows") if st == 200 else None


def eventually(srv, statement, want, timeout=30.0):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = rows(srv, statement)
        if got == want:
            return True
        time.sleep(0.1)
    print("%s: %s gave %s, wanted %s" % (srv.config, statement, got, want), flush=True)
    return False


def refused(srv, statement, needle):
    st, body, _ = sql(srv, statement)
    check(st != 200 and error_code(body) == "TOPOLOGY_ERROR" and
          needle in body["error"]["message"],
          "%s on %s is refused with TOPOLOGY_ERROR (%s): %s %s" %
          (statement, srv.config, needle, st, body))


SCHEMA = [
    "CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE audit_log (id INTEGER PRIMARY KEY, what TEXT)",
    "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT)",
    "CREATE TABLE telemetry (id INTEGER PRIMARY KEY, v REAL)",
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)",
    "CREATE TABLE scratch_tmp (id INTEGER PRIMARY KEY, v TEXT)",
]

t0 = time.time()
with cluster:
    # --- a coordinator with a tables list is refused at start-up ---
    bad = os.path.join(work, "bad.yaml")
    with open(bad, "w") as f:
        f.write("""node: { id: n1, data_dir: %s }
plugins:
  - { name: repl, kind: repl_transport, plugin: memory }
  - { name: coord, kind: coordinator, plugin: memory }
databases:
  - id: main
    tables:
      - { match: t, mode: sync }
replication:
  role: primary
  transport: repl
  coordinator: { instance: coord, cluster_id: c1 }
""" % os.path.join(work, "bad"))
    res = subprocess.run([os.environ.get("GS_BINARY", "gatestream"), "--check-config", bad],
                         capture_output=True, text=True, timeout=30)
    check(res.returncode != 0 and "per-table modes are static-mode only" in res.stderr and
          "databases[main].tables" in res.stderr,
          "a coordinator-mode config with tables is refused: %s %s" % (res.returncode,
                                                                        res.stderr))

    # --- the other start-up refusals, each naming the file and the key ---
    for name, body, needle in [
        ("star", "databases:\n  - id: main\n    tables:\n      - { match: 'a*b', mode: sync }\n"
                 "replication: { role: primary, transport: repl }\n",
         "databases[main]: tables[0].match: 'a*b': '*' may only end a pattern"),
        ("dup", "databases:\n  - id: main\n    tables:\n      - { match: t, mode: sync }\n"
                "      - { match: T, mode: primary }\n"
                "replication: { role: primary, transport: repl }\n",
         "tables[1].match: 'T' is listed twice"),
        ("catalogue", "databases:\n  - id: main\n    tables:\n"
                      "      - { match: '_sir*', mode: excluded }\n"
                      "replication: { role: primary, transport: repl }\n",
         "would match the _sirannon catalogue tables"),
        ("mode", "databases:\n  - id: main\n    tables:\n      - { match: t, mode: mirror }\n",
         "databases[0].tables[0].mode: expected one of"),
        ("unreplicated", "databases:\n  - id: main\n    tables:\n      - { match: t, mode: sync }\n",
         "databases[main].tables: per-table replication modes apply to the replicated database"),
    ]:
        path = os.path.join(work, name + ".yaml")
        with open(path, "w") as f:
            f.write("node: { id: n1, data_dir: %s }\nplugins:\n"
                    "  - { name: repl, kind: repl_transport, plugin: memory }\n%s" %
                    (os.path.join(work, "bad"), body))
        res = subprocess.run([os.environ.get("GS_BINARY", "gatestream"), "--check-config", path],
                             capture_output=True, text=True, timeout=30)
        check(res.returncode != 0 and needle in res.stderr and path in res.stderr,
              "%s: refused at start-up with '%s': %s %s" % (name, needle, res.returncode,
                                                             res.stderr))

    central = start_node("central")
    for s in SCHEMA:
        ok(central, s)
    ok(central, "INSERT INTO accounts (id, owner) VALUES (1, 'seed')")
    ok(central, "INSERT INTO settings (k, v) VALUES ('seeded', 'central')")
    check(wait_log(central, "listening on 127.0.0.1:%d" % REPL_PORT, 20.0), "central listens")
    edge1 = start_node("edge1")
    edge2 = start_node("edge2", proxy="reject")

    # --- first sync: replica tables arrive, sync tables do not (they take the stream) ---
    for e in (edge1, edge2):
        check(eventually(e, "SELECT owner FROM accounts", [{"owner": "seed"}]),
              "%s synced the accounts" % e.config)
        check(rows(e, "SELECT count(*) AS n FROM settings") == [{"n": 0}],
              "%s's first sync skipped the sync table" % e.config)

    # --- replica / primary: central writes reach both edges ---
    ok(central, "INSERT INTO accounts (id, owner) VALUES (2, 'central')")
    for e in (edge1, edge2):
        check(eventually(e, "SELECT owner FROM accounts WHERE id = 2", [{"owner": "central"}]),
              "a central account reached %s" % e.config)

    # --- readonly at the edge: pulled, writes refused ---
    ok(central, "INSERT INTO audit_log (id, what) VALUES (1, 'login')")
    check(eventually(edge1, "SELECT what FROM audit_log", [{"what": "login"}]),
          "the audit log reached edge1")
    refused(edge1, "INSERT INTO audit_log (id, what) VALUES (2, 'x')",
            "table 'audit_log' is readonly on node edge1")

    # --- primary at the edge, readonly at central ---
    ok(edge1, "INSERT INTO files (id, name) VALUES (1, 'e1.txt')")
    ok(edge2, "INSERT INTO files (id, name) VALUES (2, 'e2.txt')")
    check(eventually(central, "SELECT name FROM files ORDER BY id",
                     [{"name": "e1.txt"}, {"name": "e2.txt"}]),
          "both edges' files reached central")
    refused(central, "DELETE FROM files", "table 'files' is readonly on node central")

    # --- writeonly at the edge: pushed, remote changes ignored ---
    ok(edge1, "INSERT INTO telemetry (id, v) VALUES (1, 0.5)")
    check(eventually(central, "SELECT v FROM telemetry WHERE id = 1", [{"v": 0.5}]),
          "edge1's telemetry reached central")
    ok(central, "INSERT INTO telemetry (id, v) VALUES (100, 9.5)")
    ok(central, "INSERT INTO accounts (id, owner) VALUES (3, 'marker')")
    check(eventually(edge1, "SELECT owner FROM accounts WHERE id = 3", [{"owner": "marker"}]),
          "the marker after central's telemetry reached edge1")
    check(rows(edge1, "SELECT count(*) AS n FROM telemetry WHERE id = 100") == [{"n": 0}],
          "edge1 (writeonly) ignored central's telemetry")

    # --- excluded ---
    ok(central, "INSERT INTO scratch_tmp (id, v) VALUES (1, 'central')")
    ok(edge1, "INSERT INTO scratch_tmp (id, v) VALUES (1, 'edge1')")
    ok(central, "INSERT INTO accounts (id, owner) VALUES (4, 'marker2')")
    ok(edge1, "INSERT INTO files (id, name) VALUES (4, 'marker.txt')")
    check(eventually(edge1, "SELECT owner FROM accounts WHERE id = 4", [{"owner": "marker2"}]) and
          eventually(central, "SELECT name FROM files WHERE id = 4", [{"name": "marker.txt"}]),
          "markers after the scratch writes went both ways")
    check(rows(edge1, "SELECT v FROM scratch_tmp") == [{"v": "edge1"}] and
          rows(central, "SELECT v FROM scratch_tmp") == [{"v": "central"}] and
          rows(edge2, "SELECT count(*) AS n FROM scratch_tmp") == [{"n": 0}],
          "excluded tables stayed where they were written")

    # --- replica tables at the edge: forwarded (edge1) or refused (edge2) ---
    st, body, _ = sql(edge1, "INSERT INTO accounts (id, owner) VALUES (10, 'via-edge1')")
    check(st == 200 and body.get("changes") == 1, "edge1 forwarded an account: %s %s" % (st, body))
    check(rows(central, "SELECT owner FROM accounts WHERE id = 10") == [{"owner": "via-edge1"}],
          "the forwarded write ran on central")
    check(eventually(edge2, "SELECT owner FROM accounts WHERE id = 10", [{"owner": "via-edge1"}]),
          "the forwarded write reached edge2 through replication")
    refused(edge2, "UPDATE accounts SET owner = 'no'", "write_proxy is reject")
    st, body, _ = edge1.post("/db/main/transaction", {"statements": [
        {"sql": "INSERT INTO files (id, name) VALUES (50, 'x')"},
        {"sql": "INSERT INTO accounts (id, owner) VALUES (50, 'x')"}]})
    check(st != 200 and error_code(body) == "TOPOLOGY_ERROR" and
          "split it" in body["error"]["message"],
          "a transaction over a local and a forwarded table is refused: %s %s" % (st, body))

    # --- sync both ways, then a conflicting update converges ---
    ok(edge1, "INSERT INTO settings (k, v) VALUES ('from-edge1', '1')")
    check(eventually(central, "SELECT v FROM settings WHERE k = 'from-edge1'", [{"v": "1"}]),
          "a sync row from edge1 reached central")
    check(eventually(edge2, "SELECT v FROM settings WHERE k = 'from-edge1'", [{"v": "1"}]),
          "central relayed edge1's sync row to edge2")
    check(rows(edge2, "SELECT count(*) AS n FROM files WHERE id = 1") == [{"n": 0}],
          "edge1's files never reached edge2 (central only reads them)")
    ok(central, "INSERT INTO settings (k, v) VALUES ('from-central', '2')")
    for e in (edge1, edge2):
        check(eventually(e, "SELECT v FROM settings WHERE k = 'from-central'", [{"v": "2"}]),
              "a sync row from central reached %s" % e.config)
    ok(central, "UPDATE settings SET v = 'central' WHERE k = 'from-central'")
    ok(edge1, "UPDATE settings SET v = 'edge1' WHERE k = 'from-central'")
    want = None
    deadline = time.time() + 30
    while time.time() < deadline:
        a = rows(central, "SELECT v FROM settings WHERE k = 'from-central'")
        b = rows(edge1, "SELECT v FROM settings WHERE k = 'from-central'")
        if a is not None and a == b:
            want = a
            break
        time.sleep(0.1)
    check(want in ([{"v": "central"}], [{"v": "edge1"}]),
          "central and edge1 converge on one value of a row both updated: %s" % want)

    # --- a late edge keeps its own table through its first sync ---
    cluster.stop(edge2)
    shutil.rmtree(os.path.join(work, "edge2"), ignore_errors=True)
    os.makedirs(os.path.join(work, "edge2"))
    db = sqlite3.connect(os.path.join(work, "edge2", "main.db"))
    db.execute("CREATE TABLE files (id INTEGER PRIMARY KEY, name TEXT)")
    db.execute("INSERT INTO files VALUES (77, 'kept')")
    db.commit()
    db.close()
    edge2 = start_node("edge2", proxy="reject")
    check(eventually(edge2, "SELECT owner FROM accounts WHERE id = 10", [{"owner": "via-edge1"}]),
          "the new edge2 synced the accounts")
    check(rows(edge2, "SELECT id, name FROM files ORDER BY id") == [{"id": 77, "name": "kept"}],
          "the first sync left edge2's own files alone: %s" %
          rows(edge2, "SELECT id, name FROM files ORDER BY id"))
    # its log starts again at seq 1, below what central had applied from the old edge2:
    # central takes it from the start (its first sync request reset the position)
    for i in range(1, 4):
        ok(edge2, "INSERT INTO files (id, name) VALUES (?, ?)", [77 + i, "new-%d" % i])
    check(eventually(central, "SELECT name FROM files WHERE id > 77 ORDER BY id",
                     [{"name": "new-1"}, {"name": "new-2"}, {"name": "new-3"}]),
          "the new edge2's first writes reached central")

    cluster.stop_all()
    print("table modes test: %.1f s" % (time.time() - t0), flush=True)

finish()
