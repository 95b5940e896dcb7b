"""Coordinator-backed failover with a real etcd-server and three real gatestream processes
replicating over gRPC with mutual TLS (config/cluster/etcd, ports and paths rewritten): one test
per conformance invariant of spec 03 ("Conformance Invariants"), losing etcd, and the
`gatestream cluster` operator commands.

  at most one writable primary per group and term ... a monitor thread over every test
  no loss of a majority-acknowledged write ............ test_no_loss_of_majority_acked_writes
  stale primaries reject writes, batches, forwards .... test_stale_primary_is_fenced
  minority partitions fail closed for writes .......... test_minority_partition_fails_closed
  only in-sync replicas are promoted .................. test_only_in_sync_replicas_promoted,
                                                        test_no_safe_primary_fails_closed
  clients are rerouted or get a clear error ........... test_writes_are_rerouted_or_refused
  a returning primary rejoins through sync when safe .. test_safe_rejoin_after_restart
  ... and is quarantined with local-only writes ....... test_quarantine_of_local_only_writes
  health reports availability, coordinator, primary,
  term and repair state accurately .................... test_health_reports_accurately (and
                                                        the health checks inside the others)
  read concerns ....................................... test_read_concerns
  etcd lost: writes fail closed, recover .............. test_etcd_loss_fails_closed
  operator commands ................................... test_cluster_cli

Partitions are SIGSTOP/SIGCONT of a process. Node-c runs with write_forwarding off, so a write
it receives as a replica is refused with STALE_PRIMARY; node-a and node-b forward. Every wait
is a bounded poll of an observable condition."""
import http.client
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
import traceback

import gslib
from gslib import check, finish
from etcd_cluster import (NODE_IDS, Cluster, Etcd, http_json, wait_for)

T_START = time.time()
SESSION_TTL = 2.0
FAILOVER_BOUND = 15.0  # generous bound on a failover in this test (the soak measures it)

tmp = tempfile.mkdtemp(prefix="gs-failover-it-")
etcd = Etcd(tmp)
cl = None
CURRENT = [""]  # the test running, for messages


def ck(cond, what):
    check(cond, "%s: %s" % (CURRENT[0], what))
    return cond


def code_of(body):
    return gslib.error_code(body)


def others(node, nodes=NODE_IDS):
    return [n for n in nodes if n != node]


def rows_equal(a, b, timeout=30.0):
    """Wait until nodes a and b hold the same keys; (ok, keys_a, keys_b)."""
    last = [None, None]

    def same():
        ka, kb = cl.keys(a), cl.keys(b)
        last[0], last[1] = ka, kb
        return ka is not None and ka == kb
    ok = wait_for(same, timeout, 0.2)
    return bool(ok), last[0], last[1]


NEXT_KEY = [1_000_000]
KEY_LOCK = threading.Lock()


def new_key():
    with KEY_LOCK:
        NEXT_KEY[0] += 1
        return NEXT_KEY[0]


def insert(node, key, concern=None, timeout_ms=None, timeout=10.0):
    return cl.execute(node, "INSERT INTO t (id, v) VALUES (?, ?)", [key, "v%d" % key],
                      concern=concern, timeout_ms=timeout_ms, timeout=timeout)


# ---- the one-writable-primary-per-term monitor ----

class Monitor(threading.Thread):
    """Polls /health/ready of every running node and the group state in etcd every 100 ms:
    records, per term, which nodes said they could write, and which node etcd named primary."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop_ev = threading.Event()
        self.writable = {}   # term -> set of nodes reporting writeAvailability available
        self.recorded = {}   # term -> primary named by etcd
        self.samples = 0

    def run(self):
        while not self.stop_ev.is_set():
            try:
                p, t = cl.primary()
                if p:
                    self.recorded.setdefault(t, p)
                    if self.recorded[t] != p:
                        self.recorded[t] = "%s+%s" % (self.recorded[t], p)
            except (OSError, ValueError, http.client.HTTPException):
                pass
            for n in NODE_IDS:
                if not cl.running(n):
                    continue
                st, b = cl.ready(n, timeout=0.5)
                r = (b or {}).get("replication") or {}
                if r.get("writeAvailability") == "available":
                    try:
                        term = int(r.get("primaryTerm", "0"))
                    except ValueError:
                        term = -1
                    self.writable.setdefault(term, set()).add(n)
                self.samples += 1
            self.stop_ev.wait(0.1)


MON = Monitor()


# ---- a writer that follows the primary ----

class Writer(threading.Thread):
    """Majority-concern single-row inserts with unique keys to whichever node is primary,
    found through GET /db/main/cluster; records every acknowledged key and when."""

    def __init__(self, concern="majority"):
        super().__init__(daemon=True)
        self.concern = concern
        self.stop_ev = threading.Event()
        self.acked = []       # (key, time, node)
        self.errors = {}      # code -> count
        self.lock = threading.Lock()
        self.target = None

    def discover(self):
        for n in NODE_IDS:
            if not cl.running(n):
                continue
            st, b = cl.cluster_info(n, timeout=1.0)
            cp = (b or {}).get("currentPrimary") if st == 200 else None
            if cp and cp.get("nodeId") in NODE_IDS and cl.running(cp["nodeId"]):
                return cp["nodeId"]
        return None

    def run(self):
        while not self.stop_ev.is_set():
            if self.target is None:
                self.target = self.discover()
                if self.target is None:
                    self.stop_ev.wait(0.05)
                    continue
            key = new_key()
            try:
                st, b, _ = insert(self.target, key, concern=self.concern, timeout_ms=5000,
                                  timeout=8.0)
            except (OSError, http.client.HTTPException):
                st, b = None, None
            if st == 200:
                with self.lock:
                    self.acked.append((key, time.time(), self.target))
            else:
                c = code_of(b) or ("HTTP %s" % st if st else "connection")
                with self.lock:
                    self.errors[c] = self.errors.get(c, 0) + 1
                self.target = None
                self.stop_ev.wait(0.02)

    def acked_keys(self):
        with self.lock:
            return [k for k, _, _ in self.acked]

    def count(self):
        with self.lock:
            return len(self.acked)

    def first_ack_after(self, t0, not_node=None):
        with self.lock:
            for k, t, n in self.acked:
                if t > t0 and n != not_node:
                    return t, n
        return None

    def finish(self):
        self.stop_ev.set()
        self.join(timeout=30)


def missing_on(node, keys):
    """Keys of `keys` absent on node (reads through its HTTP API, local concern)."""
    have = cl.keys(node)
    if have is None:
        return None
    return [k for k in keys if k not in have]


def file_keys(node):
    """The keys in node's database file (node stopped)."""
    db = sqlite3.connect(os.path.join(cl.data[node], "main.db"))
    try:
        return {r[0] for r in db.execute("SELECT id FROM t")}
    finally:
        db.close()


# ---- tests ----

def test_bootstrap_group_and_endpoints():
    g = wait_for(lambda: (lambda g: g if g and g.get("currentPrimary") and
                          len(g.get("inSyncNodeIds", [])) == 3 else None)(cl.group()), 30)
    ck(g is not None, "the group is registered with all three nodes in sync: %s" % cl.group())
    if not g:
        return
    ck(g["currentPrimary"]["nodeId"] == "node-a", "node-a (role: primary) is the first primary")
    ck(sorted(g["votingDataBearingNodeIds"]) == NODE_IDS, "voters: %s" % g)
    ck(isinstance(g["primaryTerm"], str) and int(g["primaryTerm"]) >= 1, "term: %s" % g)
    ck(g["currentPrimary"].get("endpoint") == "http://127.0.0.1:%d" % cl.http["node-a"],
       "the primary's endpoint is published: %s" % g["currentPrimary"])
    keys = cl.etcd.get_prefix("gatestream/clusters/example/")
    for n in NODE_IDS:
        ck("gatestream/clusters/example/nodes/%s" % n in keys, "session of %s in etcd" % n)
    ctl = keys.get("gatestream/clusters/example/controller")
    ck(ctl is not None and json.loads(ctl).get("holderId") in NODE_IDS,
       "one controller holds the lease: %s" % ctl)
    states = []
    for n in NODE_IDS:
        st, b = cl.ready(n)
        states.append(((b or {}).get("replication") or {}).get("controller", {}).get("state"))
    ck(states.count("active") == 1 and states.count("standby") == 2,
       "one active controller, two standby: %s" % states)


def test_health_reports_accurately():
    p, term = cl.primary()
    ck(p is not None, "a primary")
    g = cl.group()
    for n in NODE_IDS:
        st, b = cl.ready(n)
        ck(st == 200, "%s /health/ready: %s %s" % (n, st, b))
        r = (b or {}).get("replication") or {}
        ck(b and b.get("status") == "ok", "%s readiness status ok (healthy): %s" % (n, b))
        ck(r.get("replicationGroupId") == "main", "%s replicationGroupId: %s" % (n, r))
        ck(r.get("primaryTerm") == str(term), "%s primaryTerm %s == etcd %s" %
           (n, r.get("primaryTerm"), term))
        ck(r.get("currentPrimary") == p, "%s currentPrimary %s == %s" %
           (n, r.get("currentPrimary"), p))
        ck(r.get("coordinator") == {"connected": True, "authority": n == p},
           "%s coordinator: %s" % (n, r.get("coordinator")))
        ck(r.get("controller", {}).get("state") in ("active", "standby"),
           "%s controller: %s" % (n, r.get("controller")))
        ck(r.get("healthReason") == "in-sync", "%s healthReason: %s" % (n, r.get("healthReason")))
        ck(r.get("readAvailability") == "available", "%s readAvailability: %s" % (n, r))
        ck(r.get("writeAvailability") == ("available" if n == p else "unavailable"),
           "%s writeAvailability: %s" % (n, r.get("writeAvailability")))
        ck(r.get("role") == ("primary" if n == p else "replica"),
           "%s role: %s" % (n, r.get("role")))
        if n == p:
            want = sorted(x for x in g["inSyncNodeIds"] if x != p)
            ck(sorted(r.get("inSyncReplicas", [])) == want,
               "primary's inSyncReplicas %s match etcd %s" % (r.get("inSyncReplicas"),
                                                              g["inSyncNodeIds"]))
            ck(r.get("laggingReplicas") == [], "no lagging replica: %s" % r.get("laggingReplicas"))
        st, ci = cl.cluster_info(n)
        ck(st == 200, "%s GET /db/main/cluster: %s %s" % (n, st, ci))
        if st != 200:
            continue
        ck(ci.get("databaseId") == "main" and ci.get("replicationGroupId") == "main",
           "%s cluster ids: %s" % (n, ci))
        ck(ci.get("role") == ("primary" if n == p else "replica"), "%s cluster role: %s" % (n, ci))
        want_cp = {"nodeId": p, "endpoint": "http://127.0.0.1:%d" % cl.http[p]}
        ck(ci.get("currentPrimary") == want_cp,
           "%s currentPrimary: %s" % (n, ci.get("currentPrimary")))
        ck(ci.get("primaryTerm") == str(term), "%s primaryTerm string: %s" % (n, ci))
        ck(ci.get("health") == "healthy" and ci.get("healthReason") == "in-sync",
           "%s health: %s/%s" % (n, ci.get("health"), ci.get("healthReason")))
        eps = {e.get("nodeId"): e for e in ci.get("readEndpoints") or []}
        ck(sorted(eps) == NODE_IDS, "%s readEndpoints name every node: %s" % (n, ci))
        for m, e in eps.items():
            ck(e.get("endpoint") == "http://127.0.0.1:%d" % cl.http[m] and
               {"local", "majority"} <= set(e.get("readConcerns", [])),
               "%s readEndpoint %s: %s" % (n, m, e))


def test_writes_are_rerouted_or_refused():
    p, term = cl.primary()
    fwd = [n for n in others(p) if n != "node-c"]       # replicas that forward
    nofwd = [n for n in others(p) if n == "node-c"]     # node-c refuses when a replica
    k = new_key()
    st, b, _ = insert(p, k)  # no concern stated: majority in coordinator mode
    ck(st == 200, "default-concern write on the primary: %s %s" % (st, b))
    on = [n for n in others(p) if k in (cl.keys(n) or set())]
    ck(len(on) >= 1,
       "a default-concern write is on a replica when acknowledged (majority): %s" % on)
    for n in fwd:
        k = new_key()
        st, b, _ = insert(n, k)
        ck(st == 200 and b.get("changes") == 1, "a write on replica %s is forwarded: %s %s" %
           (n, st, b))
        ck(k in (cl.keys(p) or set()), "the forwarded write is on the primary")
    for n in nofwd:
        k = new_key()
        st, b, _ = insert(n, k)
        ck(st == 409 and code_of(b) == "STALE_PRIMARY",
           "%s (no forwarding) refuses with 409 STALE_PRIMARY: %s %s" % (n, st, b))
        d = (b or {}).get("error", {}).get("details", {})
        cp = d.get("currentPrimary")
        cp_id = cp.get("nodeId") if isinstance(cp, dict) else cp
        ck(cp_id == p, "details.currentPrimary names %s: %s" % (p, d))
        ck(d.get("primaryTerm") == str(term), "details.primaryTerm is '%s': %s" % (term, d))
        ck(k not in (cl.keys(n) or set()) and k not in (cl.keys(p) or set()),
           "the refused write is nowhere")
    for n in others(p):
        st, b, _ = cl.post(n, "/db/main/transaction",
                           {"statements": [{"sql": "INSERT INTO t (id, v) VALUES (?, 'tx')",
                                            "params": [new_key()]}]})
        ck(st != 200 and code_of(b) in ("STALE_PRIMARY", "TOPOLOGY_ERROR"),
           "a transaction on replica %s is refused clearly (never forwarded): %s %s" % (n, st, b))


def test_read_concerns():
    p, term = cl.primary()
    r1, r2 = others(p)
    st, b, _ = cl.query(p, "SELECT count(*) AS n FROM t", concern="linearizable")
    ck(st == 200, "linearizable on the primary: %s %s" % (st, b))
    st, b, _ = cl.query(r1, "SELECT count(*) AS n FROM t", concern="linearizable")
    ck(st == 503 and code_of(b) == "READ_CONCERN_ERROR",
       "linearizable on a replica: 503 READ_CONCERN_ERROR: %s %s" % (st, b))
    st, b, _ = cl.query(r1, "SELECT count(*) AS n FROM t", concern="majority")
    ck(st == 200, "majority on an in-sync replica: %s %s" % (st, b))
    st, b, _ = cl.query(r1, "SELECT count(*) AS n FROM t", concern="local")
    ck(st == 200, "local on a replica: %s %s" % (st, b))
    # drain r2: out of the in-sync set (and not re-admitted while draining)
    code, out, err = cl.cli("drain", "--config", cl.config[r2], "--node", r2)
    ck(code == 0, "cluster drain %s: %s %s" % (r2, out, err))
    g = wait_for(lambda: (lambda g: g if r2 in g["drainingNodeIds"] else None)(cl.group()), 5)
    ck(g is not None, "%s is in drainingNodeIds: %s" % (r2, cl.group()))
    if g and r2 in g["inSyncNodeIds"]:
        print("note: a draining node stays in inSyncNodeIds (the reference implementation "
              "takes it out)", flush=True)

    def refused():
        st, b, _ = cl.query(r2, "SELECT count(*) AS n FROM t", concern="majority")
        return (st, b) if st != 200 else None
    got = wait_for(refused, 5, 0.1)
    ck(got is not None and got[0] == 503 and code_of(got[1]) in ("READ_CONCERN_ERROR",
                                                                  "NODE_NOT_IN_SYNC"),
       "majority on a node outside the in-sync set: 503 READ_CONCERN_ERROR: %s" % (got,))
    if got and code_of(got[1]) != "READ_CONCERN_ERROR":
        print("note: majority read outside the in-sync set answered %s" % code_of(got[1]))
    rb = wait_for(lambda: (lambda b: b if ((b or {}).get("replication") or {}).get(
        "healthReason") == "draining" else None)(cl.ready(r2)[1]), 5)
    r = (rb or {}).get("replication") or {}
    ck(rb and rb.get("status") == "unavailable" and r.get("readAvailability") == "unavailable"
       and r.get("writeAvailability") == "unavailable",
       "health of the draining node (unavailable/draining): %s" % (cl.ready(r2)[1],))
    st, ci = cl.cluster_info(p)
    ck(st == 200 and r2 not in [e["nodeId"] for e in ci.get("readEndpoints", [])],
       "readEndpoints leave out the draining node: %s" % ci)
    code, out, err = cl.cli("undrain", "--config", cl.config[r2], "--node", r2)
    ck(code == 0, "cluster undrain %s: %s %s" % (r2, out, err))
    g = wait_for(lambda: (lambda g: g if r2 in g["inSyncNodeIds"] and
                          r2 not in g["drainingNodeIds"] else None)(cl.group()), 30)
    ck(g is not None, "%s is re-admitted to the in-sync set after undrain: %s" % (r2, cl.group()))
    # repair: out of the in-sync set until the primary re-admits it (it is current here)
    code, out, err = cl.cli("repair", "--config", cl.config[r2], "--node", r2)
    row = [ln for ln in out.splitlines() if ln.startswith(r2 + " ")]
    ck(code == 0 and row and "repairing" in row[0] and " no " in row[0],
       "cluster repair %s shows it repairing and out of the in-sync set: %s %s" % (r2, row, err))
    g = wait_for(lambda: (lambda g: g if r2 in g["inSyncNodeIds"] and
                          r2 not in g["repairingNodeIds"] else None)(cl.group()), 30)
    ck(g is not None, "the repaired, current %s is re-admitted: %s" % (r2, cl.group()))


def test_cluster_cli():
    p, term = cl.primary()
    code, out, err = cl.cli("status", "--config", cl.config["node-b"])
    ck(code == 0, "status --config exits 0: %s" % err)
    ck("cluster example, group main" in out and ("primary %s" % p) in out and
       ("term %d" % term) in out, "status names the cluster, primary and term:\n%s" % out)
    lines = out.splitlines()
    head = [ln for ln in lines if ln.startswith("NODE")]
    ck(head and all(c in head[0] for c in ("ROLE", "SESSION", "IN-SYNC", "STATE", "PROGRESS",
                                           "ENDPOINT")), "table header: %s" % head)
    for n in NODE_IDS:
        row = [ln for ln in lines if ln.startswith(n + " ")]
        ck(len(row) == 1 and " live " in row[0] and " yes " in row[0] and
           ("http://127.0.0.1:%d" % cl.http[n]) in row[0] and
           (("primary" if n == p else "replica") in row[0]),
           "row of %s: %s" % (n, row))
    code, out, err = cl.cli("status", "--config", cl.config["node-a"], "--json")
    ck(code == 0, "status --json exits 0: %s" % err)
    try:
        j = json.loads(out)
    except ValueError:
        j = {}
    ck(j.get("group", {}).get("currentPrimary", {}).get("nodeId") == p and
       j.get("group", {}).get("primaryTerm") == str(term) and
       sorted(x["nodeId"] for x in j.get("nodes", [])) == NODE_IDS and
       j.get("controller") in NODE_IDS,
       "status --json: %s" % out[:500])
    url = "http://127.0.0.1:%d" % cl.http["node-c"]
    code, out, err = cl.cli("status", "--url", url, "--db", "main")
    ck(code == 0 and ("primary %s" % p) in out and "READ CONCERNS" in out,
       "status --url:\n%s%s" % (out, err))
    code, out, err = cl.cli("status", "--url", url, "--db", "main", "--json")
    st, ci = cl.cluster_info("node-c")
    try:
        j = json.loads(out)
    except ValueError:
        j = None
    ck(code == 0 and j is not None and j.get("currentPrimary") == ci.get("currentPrimary"),
       "status --url --json is the node's ClusterStatusInfo: %s" % out[:300])
    # errors are clear and non-zero
    code, out, err = cl.cli("drain", "--config", cl.config["node-a"], "--node", "node-z")
    ck(code == 1 and "not a voting member" in err, "drain of an unknown node: %s %s" % (code, err))
    code, out, err = cl.cli("status", "--url", "http://127.0.0.1:1", "--db", "main")
    ck(code == 1 and "CONNECTION_ERROR" in err, "status of an unreachable node: %s %s" %
       (code, err))
    code, out, err = cl.cli("status", "--url", url)
    ck(code == 2 and "--db" in err, "--url without --db: %s %s" % (code, err))
    code, out, err = cl.cli("drain", "--url", url, "--db", "main")
    ck(code == 2, "drain over --url is a usage error: %s" % err)
    # drain a replica, then undrain it
    r = others(p)[0]
    code, out, err = cl.cli("drain", "--config", cl.config[r], "--node", r)
    ck(code == 0 and "drain: %s" % r in out and "draining" in out,
       "drain %s prints the new state:\n%s%s" % (r, out, err))
    ck(r in (cl.group() or {}).get("drainingNodeIds", []), "%s is in drainingNodeIds" % r)
    got = wait_for(lambda: (lambda b: b if ((b or {}).get("replication") or {}).get(
        "healthReason") == "draining" else None)(cl.ready(r)[1]), 5)
    ck(got is not None and got["replication"]["readAvailability"] == "unavailable",
       "the draining node reports draining and serves no reads: %s" % (cl.ready(r)[1],))
    code, out, err = cl.cli("undrain", "--config", cl.config[r], "--node", r)
    ck(code == 0 and r not in (cl.group() or {}).get("drainingNodeIds", []),
       "undrain %s: %s %s" % (r, out, err))
    # drain the primary: the controller hands primary duty to an in-sync replica
    t0 = time.time()
    code, out, err = cl.cli("drain", "--config", cl.config[p], "--node", p)
    ck(code == 0, "drain the primary %s: %s" % (p, err))
    q, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(q is not None, "draining the primary moves primary duty within %.0fs" % FAILOVER_BOUND)
    print("drain of the primary handed over in %.2f s" % (time.time() - t0), flush=True)
    code, out, err = cl.cli("undrain", "--config", cl.config[p], "--node", p)
    ck(code == 0, "undrain %s: %s" % (p, err))
    g = wait_for(lambda: (lambda g: g if p in g["inSyncNodeIds"] and
                          p not in g["drainingNodeIds"] + g["repairingNodeIds"] else None)(
        cl.group()), 30)
    ck(g is not None, "the undrained former primary %s re-enters the in-sync set: %s" %
       (p, cl.group()))


def test_no_loss_of_majority_acked_writes():
    p, term = cl.primary()
    w = Writer()
    w.start()
    ok = wait_for(lambda: w.count() >= 200, 30, 0.05)
    ck(ok, "writes flow before the kill (%d)" % w.count())
    t_kill = time.time()
    cl.kill9(p)
    q, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(q is not None, "a new primary within %.0fs of kill -9 of %s" % (FAILOVER_BOUND, p))
    first = wait_for(lambda: w.first_ack_after(t_kill, not_node=p), FAILOVER_BOUND)
    ck(first is not None, "a write is accepted by the new primary")
    if first:
        print("failover: kill -9 -> first accepted write on %s in %.2f s (term %d -> %d)" %
              (first[1], first[0] - t_kill, term, t2), flush=True)
    n_kill = w.count()
    wait_for(lambda: w.count() >= n_kill + 100, 20, 0.05)
    w.finish()
    ck(t2 == term + 1, "the term advanced by one: %d -> %d" % (term, t2))
    keys = w.acked_keys()
    if q:
        miss = missing_on(q, keys)
        ck(miss == [], "every acknowledged write (%d) is on the new primary %s; missing %s" %
           (len(keys), q, (miss or [])[:10]))
        r = [n for n in NODE_IDS if n not in (p, q)][0]
        ok, kq, kr = rows_equal(q, r)
        ck(ok, "the surviving replica %s converges with %s" % (r, q))
    print("no-loss: %d writes acknowledged, errors %s" % (len(keys), w.errors), flush=True)
    cl.start(p)  # heal() decides whether it rejoins or needs `cluster rejoin`


def test_safe_rejoin_after_restart():
    p, term = cl.primary()
    for _ in range(20):
        insert(p, new_key(), concern="majority")
    for n in others(p):
        ck(rows_equal(p, n)[0], "%s caught up before the kill" % n)
    cl.kill9(p)
    q, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(q is not None, "a new primary after kill -9 of %s" % p)
    g = cl.group()
    ck(p in g["repairingNodeIds"] and p not in g["inSyncNodeIds"],
       "the displaced primary %s is repairing and out of the in-sync set: %s" % (p, g))
    for _ in range(20):
        insert(q, new_key(), concern="majority")
    t0 = time.time()
    cl.start(p)
    g = wait_for(lambda: (lambda g: g if p in g["inSyncNodeIds"] and
                          p not in g["repairingNodeIds"] else None)(cl.group()), 40)
    ck(g is not None, "%s rejoins: leaves repairingNodeIds and re-enters inSyncNodeIds: %s" %
       (p, cl.group()))
    ck(p not in (cl.group() or {}).get("faultedNodeIds", []), "%s is not quarantined" % p)
    if g:
        print("safe rejoin of %s took %.2f s after restart" % (p, time.time() - t0), flush=True)
    ck(rows_equal(q, p)[0], "%s holds what the new primary holds" % p)
    st, b = cl.ready(p)
    r = (b or {}).get("replication") or {}
    ck(r.get("role") == "replica" and r.get("healthReason") == "in-sync" and
       r.get("primaryTerm") == str(t2), "health of the rejoined node: %s" % r)


def test_quarantine_of_local_only_writes():
    p, term = cl.primary()
    r1, r2 = others(p)
    # Local-only writes: with both replicas stopped, no batch is acknowledged, so the
    # primary's sender stops after max_pending_batches (10) unacknowledged batches; the
    # local-concern writes after those are committed on the primary and never sent. (The
    # stopped replicas still receive the first batches into their socket buffers and apply
    # them when they resume.)
    written = []
    cl.sigstop(r1)
    cl.sigstop(r2)
    try:
        for _ in range(25):
            k = new_key()
            st, b, _ = insert(p, k, concern="local", timeout=5.0)
            if st == 200:
                written.append(k)
        ck(len(written) == 25, "local-concern writes on the primary while its replicas are "
           "stopped are acknowledged (%d of 25)" % len(written))
        cl.kill9(p)
    finally:
        cl.sigcont(r1)
        cl.sigcont(r2)
    q, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(q is not None, "a new primary after kill -9 of %s" % p)
    if not q:
        return
    have = cl.keys(q) or set()
    local_only = [k for k in written if k not in have]
    ck(len(local_only) > 0, "setup: some writes stayed local to the killed primary (%d of %d "
       "reached %s)" % (len(written) - len(local_only), len(written), q))
    cl.start(p)
    g = wait_for(lambda: (lambda g: g if p in g["faultedNodeIds"] else None)(cl.group()), 30)
    ck(g is not None, "%s holding a local-only write is quarantined (faultedNodeIds): %s" %
       (p, cl.group()))
    if g:
        ck(p not in g["inSyncNodeIds"], "a faulted node is out of the in-sync set")
    st, b = cl.ready(p)
    r = (b or {}).get("replication") or {}
    ck(r.get("healthReason") == "faulted" and r.get("readAvailability") == "unavailable" and
       r.get("writeAvailability") == "unavailable" and (b or {}).get("status") == "unavailable",
       "health of the quarantined node: %s" % b)
    st, b, _ = insert(p, new_key())
    ck(st == 503 and code_of(b) in ("UNSAFE_RECOVERY_REQUIRED", "NODE_NOT_IN_SYNC"),
       "a write on the quarantined node is refused: %s %s" % (st, b))
    st, b, _ = cl.query(p, "SELECT count(*) AS n FROM t")
    ck(st == 503 and code_of(b) in ("UNSAFE_RECOVERY_REQUIRED", "NODE_NOT_IN_SYNC"),
       "a read on the quarantined node is refused: %s %s" % (st, b))
    st, ci = cl.cluster_info(q)
    ck(st == 200 and p not in [e["nodeId"] for e in ci.get("readEndpoints", [])],
       "readEndpoints leave out the quarantined node: %s" % ci)
    code, out, err = cl.cli("status", "--config", cl.config[q])
    row = [ln for ln in out.splitlines() if ln.startswith(p + " ")]
    ck(code == 0 and row and "faulted" in row[0], "cluster status shows %s faulted: %s" % (p, row))
    # the operator discards the local-only write: rejoin, the node syncs from the primary
    t0 = time.time()
    code, out, err = cl.cli("rejoin", "--config", cl.config[p], "--node", p)
    ck(code == 0, "cluster rejoin %s: %s %s" % (p, out, err))
    g = wait_for(lambda: (lambda g: g if p in g["inSyncNodeIds"] and
                          p not in g["faultedNodeIds"] + g["repairingNodeIds"] else None)(
        cl.group()), 60)
    ck(g is not None, "after rejoin %s syncs and re-enters the in-sync set: %s" % (p, cl.group()))
    if g:
        print("rejoin of a quarantined node took %.2f s" % (time.time() - t0), flush=True)
    ok, kq, kp = rows_equal(q, p)
    ck(ok and not (set(local_only) & (kp or set())),
       "the rejoined node holds the new primary's rows and none of its local-only writes")


def test_stale_primary_is_fenced():
    p, term = cl.primary()
    w = Writer()
    w.start()
    wait_for(lambda: w.count() >= 100, 30, 0.05)
    cl.sigstop(p)
    t_stop = time.time()
    q, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(q is not None, "a new primary while %s is stopped" % p)
    first = wait_for(lambda: w.first_ack_after(t_stop, not_node=p), FAILOVER_BOUND)
    if first:
        print("failover after SIGSTOP of %s: first write on %s after %.2f s" %
              (p, first[1], first[0] - t_stop), flush=True)
    cl.sigcont(p)
    # the stale primary, resumed, must not acknowledge a write of its own under the old term
    direct = []
    t_end = time.time() + 3.0
    while time.time() < t_end:
        k = new_key()
        try:
            st, b, _ = insert(p, k, concern="local", timeout=3.0)
        except (OSError, http.client.HTTPException):
            st, b = None, None
        direct.append((k, st, code_of(b)))
    w.finish()
    acked_direct = [k for k, st, _ in direct if st == 200]
    codes = sorted({c for _, st, c in direct if st != 200 and c})
    ck(all(c in ("STALE_PRIMARY", "AUTHORITY_LOST", "COORDINATOR_UNAVAILABLE", "NODE_NOT_IN_SYNC",
                 "UNSAFE_RECOVERY_REQUIRED", "TOPOLOGY_ERROR") for c in codes),
       "the resumed stale primary refuses with fencing codes: %s" % codes)
    if acked_direct and q:
        miss = missing_on(q, acked_direct)
        ck(miss == [], "writes the resumed node acknowledged were forwarded to the new primary "
           "(missing there: %s)" % (miss or [])[:10])
    r = [n for n in NODE_IDS if n not in (p, q)][0] if q else None
    if q:
        miss = missing_on(q, w.acked_keys())
        ck(miss == [], "every majority-acknowledged write is on the new primary (missing %s)" %
           (miss or [])[:10])
        ok, kq, kr = rows_equal(q, r)
        ck(ok, "the third node %s holds exactly the new primary's rows: no stale batch applied "
           "(extra on %s: %s)" % (r, r, sorted((kr or set()) - (kq or set()))[:10]))
    # the former primary either rejoined (nothing local-only) or is quarantined (it committed
    # writes the group never saw before it was stopped); its file tells which is right
    g = wait_for(lambda: (lambda g: g if p in g["faultedNodeIds"] or
                          (p in g["inSyncNodeIds"] and p not in g["repairingNodeIds"])
                          else None)(cl.group()), 40)
    ck(g is not None, "the former primary %s settles (rejoined or quarantined): %s" %
       (p, cl.group()))
    cl.stop(p)
    if q and g:
        local_only = file_keys(p) - (cl.keys(q) or set())
        faulted = p in g["faultedNodeIds"]
        ck(faulted == bool(local_only),
           "%s is %s and holds %d local-only rows %s" % (
               p, "quarantined" if faulted else "in sync", len(local_only),
               sorted(local_only)[:5]))
        ck(not (local_only & set(w.acked_keys())), "no local-only row was majority-acknowledged")
        ck(not (local_only & (cl.keys(r) or set())), "no local-only row reached %s" % r)
    cl.start(p)


def test_minority_partition_fails_closed():
    p, term = cl.primary()
    r1, r2 = others(p)
    cl.sigstop(r1)
    cl.sigstop(r2)
    try:
        t0 = time.time()
        st, b, _ = insert(p, new_key(), concern="majority", timeout_ms=1500)
        ck(st != 200 and code_of(b), "a majority write with both replicas cut off fails: %s %s"
           % (st, b))
        st, b, _ = insert(p, new_key(), timeout=15.0)
        ck(st != 200 and code_of(b), "a default-concern write (majority) fails too: %s %s" %
           (st, b))
        print("minority writes failed with %s after %.1f s" % (code_of(b), time.time() - t0),
              flush=True)
    finally:
        cl.sigcont(r1)
        cl.sigcont(r2)

    def recovered():
        q, _ = cl.primary()
        if not q or not cl.running(q):
            return None
        st, b, _ = insert(q, new_key(), concern="majority", timeout_ms=2000)
        return st == 200
    ck(wait_for(recovered, 30, 0.2), "majority writes succeed again once the partition heals")


def test_only_in_sync_replicas_promoted():
    p, term = cl.primary()
    q, r = others(p)
    w = Writer()
    w.start()
    wait_for(lambda: w.count() >= 50, 20, 0.05)
    # r stops answering: it falls out of the in-sync set (acks missing, then its session)
    cl.sigstop(r)
    try:
        out = wait_for(lambda: r not in cl.group()["inSyncNodeIds"], 20, 0.1)
        ck(out, "%s, stopped, leaves the in-sync set under writes: %s" % (r, cl.group()))
        first_term = term
        cl.kill9(p)   # the primary dies while r is behind: only q may be promoted
    finally:
        cl.sigcont(r)
    w.finish()
    live = wait_for(lambda: "gatestream/clusters/example/nodes/%s" % r in
                    cl.etcd.get_prefix("gatestream/clusters/example/nodes/"), 10, 0.1)
    ck(live, "%s has a live session again (it is a candidate by liveness)" % r)
    n, t2 = cl.wait_primary(FAILOVER_BOUND, not_node=p, min_term=term + 1)
    ck(n == q, "only the in-sync replica %s is promoted (got %s)" % (q, n))
    promoted = {t: x for t, x in MON.recorded.items() if t > first_term}
    ck(all(x != r for x in promoted.values()),
       "the out-of-sync node %s was never the primary: %s" % (r, promoted))
    if n:
        miss = missing_on(n, w.acked_keys())
        ck(miss == [], "no acknowledged write lost (missing %s)" % (miss or [])[:10])
    cl.start(p)


def test_no_safe_primary_fails_closed():
    p, term = cl.primary()
    q, r = others(p)
    code, out, err = cl.cli("drain", "--config", cl.config[r], "--node", r)
    ck(code == 0, "drain %s: %s" % (r, err))
    cl.kill9(q)   # q down (not the primary): p stays primary
    cl.kill9(p)   # then the primary: only the repairing r is left alive
    t0 = time.time()
    # past the sessions' expiry and several controller ticks, nobody may have been promoted
    time_limit = t0 + SESSION_TTL * 2 + 3.0
    promoted = None
    while time.time() < time_limit:
        x, t = cl.primary()
        if t > term:
            promoted = (x, t)
            break
        time.sleep(0.2)
    ck(promoted is None, "no node is promoted when the only live one is draining: %s" %
       (promoted,))
    st, b, _ = insert(r, new_key(), timeout=10.0)
    ck(st in (409, 503) and code_of(b) in ("NO_SAFE_PRIMARY", "STALE_PRIMARY", "TOPOLOGY_ERROR",
                                           "NODE_NOT_IN_SYNC", "AUTHORITY_LOST"),
       "a write on the survivor fails with a clear error: %s %s" % (st, b))
    st, ci = cl.cluster_info(r)
    ck(st == 200 and ci.get("health") == "unavailable" and ci.get("currentPrimary") is None,
       "the survivor reports no safe primary (currentPrimary null, health unavailable): %s" %
       ci)
    code, out, err = cl.cli("undrain", "--config", cl.config[r], "--node", r)
    ck(code == 0, "undrain %s: %s" % (r, err))
    cl.start(p)
    cl.start(q)


def test_etcd_loss_fails_closed():
    p, term = cl.primary()
    ck(insert(p, new_key())[0] == 200, "writes work before etcd goes")
    t0 = time.time()
    etcd.stop()
    refused = []

    def fenced():
        st, b, _ = insert(p, new_key(), timeout=8.0)
        if st != 200:
            refused.append((time.time() - t0, st, code_of(b)))
            return True
        return False
    ok = wait_for(fenced, SESSION_TTL * 3 + 5, 0.1)
    ck(ok and refused[-1][1] == 503 and refused[-1][2] in ("COORDINATOR_UNAVAILABLE",
                                                           "AUTHORITY_LOST"),
       "without etcd the primary refuses writes (503 COORDINATOR_UNAVAILABLE): %s" % refused)
    if refused:
        print("etcd stopped: writes refused after %.2f s with %s" % (refused[-1][0],
                                                                   refused[-1][2]), flush=True)
    for _ in range(5):
        st, b, _ = insert(p, new_key(), timeout=8.0)
        ck(st != 200, "still refused while etcd is down: %s %s" % (st, b))
    st, b = cl.ready(p)
    r = (b or {}).get("replication") or {}
    ck(r.get("coordinator", {}).get("connected") is False and
       r.get("writeAvailability") == "unavailable",
       "health while etcd is down: %s" % r)
    code, out, err = cl.cli("status", "--config", cl.config[p], timeout=60)
    ck(code == 1 and "COORDINATOR_UNAVAILABLE" in err,
       "cluster status fails clearly without etcd: %s %s" % (code, err))
    etcd.start()
    t1 = time.time()

    def writes_again():
        x, _ = cl.primary()
        if not x or not cl.running(x):
            return None
        st, b, _ = insert(x, new_key(), timeout=8.0)
        return x if st == 200 else None
    x = wait_for(writes_again, 40, 0.2)
    ck(x is not None, "writes recover once etcd is back")
    if x:
        print("etcd back: writes accepted again after %.2f s (primary %s)" % (time.time() - t1, x),
              flush=True)


TESTS = [
    test_bootstrap_group_and_endpoints,
    test_health_reports_accurately,
    test_writes_are_rerouted_or_refused,
    test_read_concerns,
    test_cluster_cli,
    test_no_loss_of_majority_acked_writes,
    test_safe_rejoin_after_restart,
    test_quarantine_of_local_only_writes,
    test_stale_primary_is_fenced,
    test_minority_partition_fails_closed,
    test_only_in_sync_replicas_promoted,
    test_no_safe_primary_fails_closed,
    test_etcd_loss_fails_closed,
]


def main():
    global cl
    only = sys.argv[1:]  # run some tests by name: test_failover_etcd.py test_read_concerns
    try:
        etcd.start()
        cl = Cluster(tmp, etcd, write_forwarding={"node-c": False})
        for n in NODE_IDS:
            cl.start(n)
        MON.start()
        p = wait_for(lambda: cl.healthy_state(NODE_IDS) and cl.primary()[0], 40)
        check(bool(p), "the cluster comes up healthy: %s" % cl.group())
        if not p:
            for n in NODE_IDS:
                print("---- %s log ----\n%s" % (n, cl.log_tail(n)))
            return
        st, b, _ = cl.execute(p, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        check(st == 200, "create table: %s %s" % (st, b))
        for t in TESTS:
            if only and t.__name__ not in only:
                continue
            CURRENT[0] = t.__name__
            if not cl.heal(60):
                check(False, "%s: the cluster did not heal before the test: %s" %
                      (t.__name__, cl.group()))
                for n in NODE_IDS:
                    print("---- %s log ----\n%s" % (n, cl.log_tail(n)))
                continue
            before = gslib.FAILED
            t0 = time.time()
            try:
                t()
            except Exception:  # noqa: BLE001 - one test's crash must not hide the others
                check(False, "%s raised:\n%s" % (t.__name__, traceback.format_exc()))
            print("%s: %s in %.1f s" % (t.__name__, "ok" if gslib.FAILED == before else "FAILED",
                                        time.time() - t0), flush=True)
            if gslib.FAILED != before:
                for n in NODE_IDS:
                    print("---- %s log (tail) ----\n%s" % (n, cl.log_tail(n, 2500)))
        MON.stop_ev.set()
        MON.join(timeout=5)
        multi = {t: sorted(ns) for t, ns in MON.writable.items() if len(ns) > 1}
        check(not multi, "at most one writable primary per term (%d samples): %s" %
              (MON.samples, multi))
        wrong = {t: sorted(ns) for t, ns in MON.writable.items()
                 if t in MON.recorded and any(n != MON.recorded[t] for n in ns)}
        check(not wrong, "a node wrote only in a term etcd recorded it as primary of: %s %s" %
              (wrong, MON.recorded))
        print("terms seen: %s" % dict(sorted(MON.recorded.items())), flush=True)
        cl.stop_running_checked()
    finally:
        MON.stop_ev.set()
        if cl:
            cl.stop_all()
            cl.cleanup()
        etcd.stop()
        print("failover test took %.1f s" % (time.time() - T_START), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
    finish()
