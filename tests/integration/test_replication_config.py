"""The replication section of the YAML on a real process: --check-config refuses what cannot
replicate (with file and key), a primary reports its replication state in /health/ready and
answers a majority write it cannot satisfy with WRITE_CONCERN_ERROR, and a replica that has
never synced is unavailable and refuses writes with TOPOLOGY_ERROR. (Multi-process clusters
need a network transport: tests/integration/test_cluster_*.py.)"""
import os
import subprocess
import tempfile

from gslib import GATESTREAM, PLUGIN_DIR, Server, check, error_code, finish, free_port

env = dict(os.environ, GS_PLUGIN_DIR=PLUGIN_DIR)
tmp = tempfile.mkdtemp(prefix="gs-replcfg-")

BASE = """
node: {{ id: {node}, data_dir: {data} }}
plugins:
  - name: http
    kind: client_transport
  - name: bus
    plugin: memory
    kind: repl_transport
    config: {{ bus: it, peers: [{peer}] }}
server: {{ host: 127.0.0.1, port: {port}, accept_sql: true }}
databases:
  - id: main
{databases}
replication:
{replication}
"""


def yaml(node="node-a", peer="node-b", port=0, databases="", replication=""):
    return BASE.format(node=node, peer=peer, data=os.path.join(tmp, node), port=port,
                       databases=databases, replication=replication)


def check_config(text):
    path = os.path.join(tmp, "c.yaml")
    with open(path, "w") as f:
        f.write(text)
    p = subprocess.run([GATESTREAM, "--check-config", path], capture_output=True, text=True,
                       timeout=30, env=env)
    return p.returncode, p.stdout + p.stderr


GOOD = "  role: primary\n  transport: bus\n  peers: [{id: node-b, role: replica}]\n"
rc, out = check_config(yaml(replication=GOOD))
check(rc == 0, "a primary with a memory transport checks: %s" % out)

BAD = [
    ("  role: leader\n  transport: bus\n", "role"),
    ("  role: primary\n", "replication.transport"),
    ("  role: primary\n  transport: http\n", "is not a repl_transport"),
    ("  role: primary\n  transport: bus\n  peers: [{id: node-a, role: replica}]\n",
     "this node itself"),
    ("  role: replica\n  transport: bus\n  peers: [{id: node-b, role: replica}]\n",
     "exactly one peer with role 'primary'"),
    ("  role: primary\n  transport: bus\n  peers: [{id: node-b, role: primary}]\n",
     "one primary"),
    ("  role: primary\n  transport: bus\n  database: other\n", "not declared under databases"),
    ("  role: primary\n  transport: bus\n  batch_size: 5000\n", "batch_size"),
    ("  role: primary\n  transport: bus\n  resolver: bus\n", "is not a resolver"),
    ("  role: primary\n  transport: bus\n  write_concern: most\n", "write_concern"),
    ("  role: primary\n  transport: bus\n  unknown_key: 1\n", "unknown_key"),
]
for text, needle in BAD:
    rc, out = check_config(yaml(replication=text))
    check(rc != 0 and needle in out, "refused (%s): rc=%d %s" % (needle, rc, out.strip()))

# --- a primary alone: replication state, local writes, an unmet majority ---
port = free_port()
primary = Server(yaml_text=yaml(port=port, replication=GOOD +
                                "  write_concern_timeout_ms: 300\n"), port=port)
with primary:
    st, body, _ = primary.request("GET", "/health/ready")
    repl = body.get("replication", {}) if isinstance(body, dict) else {}
    check(st == 200 and body.get("status") == "ok", "primary ready: %s" % body)
    check(repl.get("role") == "primary" and repl.get("syncState") == "ready" and
          repl.get("peers") == 0 and repl.get("writeAvailability") == "available" and
          repl.get("healthReason") == "in-sync", "replication section: %s" % repl)
    st, _, _ = primary.post("/db/main/execute",
                            {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"})
    check(st == 200, "DDL on a replicating primary")
    st, body, _ = primary.post("/db/main/execute",
                               {"sql": "INSERT INTO t VALUES (1, 'a')",
                                "writeConcern": {"level": "local"}})
    check(st == 200 and body.get("changes") == 1, "a local write: %s" % body)
    st, body, _ = primary.post("/db/main/execute",
                               {"sql": "INSERT INTO t VALUES (2, 'b')",
                                "writeConcern": {"level": "majority", "timeoutMs": 200}})
    check(error_code(body) == "WRITE_CONCERN_ERROR", "majority with no replica: %s" % body)
    st, body, _ = primary.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"})
    check(body.get("rows") == [{"n": 2}], "the write committed locally anyway: %s" % body)
    st, body, _ = primary.post("/db/main/execute",
                               {"sql": "CREATE VIEW v AS SELECT * FROM t"})
    check(error_code(body) == "BATCH_VALIDATION_ERROR", "unsafe DDL refused: %s" % body)
    st, body, _ = primary.request("GET", "/health/ready")
    check(body.get("replication", {}).get("localSeq") not in (None, "0"),
          "localSeq counts the captured changes: %s" % body)

# --- a replica that never synced: unavailable, writes refused ---
port = free_port()
replica = Server(yaml_text=yaml(node="node-b", peer="node-a", port=port, replication=(
    "  role: replica\n  transport: bus\n  peers: [{id: node-a, role: primary}]\n")), port=port)
with replica:
    st, body, _ = replica.request("GET", "/health/ready")
    repl = body.get("replication", {})
    check(body.get("status") == "unavailable" and repl.get("syncState") == "pending" and
          repl.get("healthReason") == "sync-pending" and
          repl.get("readAvailability") == "unavailable", "replica before sync: %s" % body)
    st, body, _ = replica.post("/db/main/execute", {"sql": "CREATE TABLE x (a)"})
    check(error_code(body) == "TOPOLOGY_ERROR", "a replica refuses writes: %s" % body)
    st, body, _ = replica.post("/db/main/transaction",
                               {"statements": [{"sql": "CREATE TABLE x (a)"}]})
    check(error_code(body) == "TOPOLOGY_ERROR", "and transactions: %s" % body)

finish()
