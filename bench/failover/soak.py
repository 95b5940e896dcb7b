#!/usr/bin/env python3
"""Failover soak: a real etcd-server and the three-node example cluster of config/cluster/etcd
(ports, paths and data dirs moved into a temporary folder), a steady majority-concern write
load, and N cycles of kill -9 of the current primary.

Each cycle: wait until the group is healthy (a writable primary, every node in the in-sync
set); kill -9 the primary; time how long until a write is accepted by the new primary (the
failover time: kill to the first acknowledged write on another node); restart the killed node;
if it comes back quarantined (it held writes the group never acknowledged), run
`gatestream cluster rejoin` for it; wait for the group to heal. The writer thread posts
single-row inserts with unique keys to whichever node /db/main/cluster names primary and
records every acknowledged key. At the end every acknowledged key must be on every node.

Reports cycles, writes acknowledged, writes lost (must be 0), quarantines, and the failover
time distribution (median, p99 by nearest rank, max). Exit status 0 when every cycle completed
and no acknowledged write was lost (and, with --check-targets, median <= 3 s and p99 <= 5 s).

  python3 bench/failover/soak.py --cycles 20 --binary build/gatestream --plugin-dir build/plugins
"""
import argparse
import bisect
import http.client
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import gslib  # noqa: E402
from etcd_cluster import NODE_IDS, Cluster, Etcd, wait_for  # noqa: E402


class Writer(threading.Thread):
    """Majority-concern inserts with unique keys to the primary /db/main/cluster names."""

    def __init__(self, cl):
        super().__init__(daemon=True)
        self.cl = cl
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.acked = []   # (key, time acknowledged, node)
        self.ack_times = []
        self.errors = {}
        self.next_key = 1
        self.target = None

    def discover(self):
        for n in NODE_IDS:
            if not self.cl.running(n):
                continue
            st, b = self.cl.cluster_info(n, timeout=1.0)
            cp = (b or {}).get("currentPrimary") if st == 200 else None
            if cp and cp.get("nodeId") in NODE_IDS and self.cl.running(cp["nodeId"]):
                return cp["nodeId"]
        return None

    def run(self):
        while not self.stop_ev.is_set():
            if self.target is None:
                self.target = self.discover()
                if self.target is None:
                    self.stop_ev.wait(0.02)
                    continue
            key = self.next_key
            self.next_key += 1
            try:
                st, b, _ = self.cl.execute(self.target, "INSERT INTO t (id, v) VALUES (?, ?)",
                                           [key, "soak"], concern="majority", timeout_ms=5000,
                                           timeout=8.0)
            except (OSError, http.client.HTTPException):
                st, b = None, None
            if st == 200:
                with self.lock:
                    now = time.time()
                    self.acked.append((key, now, self.target))
                    self.ack_times.append(now)
            else:
                code = gslib.error_code(b) or ("HTTP %s" % st if st else "no answer")
                with self.lock:
                    self.errors[code] = self.errors.get(code, 0) + 1
                self.target = None
                self.stop_ev.wait(0.01)

    def count(self):
        with self.lock:
            return len(self.acked)

    def first_after(self, t0, not_node):
        """(time, node) of the first write acknowledged after t0 by a node other than
        not_node, or None. acked is in time order (one writer thread)."""
        with self.lock:
            i = bisect.bisect_right(self.ack_times, t0)
            for k, t, n in self.acked[i:]:
                if n != not_node:
                    return t, n
        return None

    def keys(self):
        with self.lock:
            return [k for k, _, _ in self.acked]


def nearest_rank(sorted_values, pct):
    if not sorted_values:
        return float("nan")
    k = max(1, math.ceil(pct / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


class State:
    """What a run gathered, for the report (filled as it goes, so a failed run reports too)."""

    def __init__(self, cycles):
        self.cycles_requested = cycles
        self.completed = 0
        self.times = []        # failover seconds per cycle
        self.quarantines = []  # cycles whose victim came back quarantined
        self.problems = []
        self.keys = []
        self.lost_by_node = {}
        self.primary = None
        self.writer_errors = {}


def run(args, tmp, etcd, state, holder):
    etcd.start()
    cl = holder["cluster"] = Cluster(tmp, etcd, log_level="warn")
    for n in NODE_IDS:
        cl.start(n)
    p = wait_for(lambda: cl.healthy_state(NODE_IDS) and cl.primary()[0], 60)
    if not p:
        state.problems.append("the cluster did not come up healthy: %s" % cl.group())
        return
    st, b, _ = cl.execute(p, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    if st != 200:
        state.problems.append("create table: %s %s" % (st, b))
        return
    writer = holder["writer"] = Writer(cl)
    writer.start()
    for cycle in range(1, args.cycles + 1):
        if not wait_for(lambda: cl.healthy_state(NODE_IDS), args.heal_timeout, 0.1):
            state.problems.append("cycle %d: the group did not heal within %.0fs: %s" %
                                  (cycle, args.heal_timeout, cl.group()))
            break
        n0 = writer.count()
        if not wait_for(lambda: writer.count() >= n0 + 50, 30, 0.02):
            state.problems.append("cycle %d: the writer made no progress (errors %s)" %
                                  (cycle, writer.errors))
            break
        victim, term = cl.primary()
        t_kill = time.time()
        cl.kill9(victim)
        first = wait_for(lambda: writer.first_after(t_kill, victim), args.failover_timeout, 0.01)
        if not first:
            state.problems.append("cycle %d: no write accepted within %.0fs of killing %s: %s" %
                                  (cycle, args.failover_timeout, victim, cl.group()))
            break
        dt = first[0] - t_kill
        state.times.append(dt)
        _, new_term = cl.primary()
        print("cycle %2d: killed %s (term %d); %s accepted a write after %.2f s (term %d)" %
              (cycle, victim, term, first[1], dt, new_term), flush=True)
        cl.start(victim)
        settled = wait_for(lambda: (lambda g: g if g and (
            victim in g.get("faultedNodeIds", []) or
            (victim in g.get("inSyncNodeIds", []) and
             victim not in g.get("repairingNodeIds", []))) else None)(cl.group()),
            args.heal_timeout, 0.1)
        if not settled:
            state.problems.append("cycle %d: %s neither rejoined nor was quarantined: %s" %
                                  (cycle, victim, cl.group()))
            break
        if victim in settled.get("faultedNodeIds", []):
            state.quarantines.append(cycle)
            code, out, err = cl.cli("rejoin", "--config", cl.config[victim], "--node", victim)
            print("cycle %2d: %s came back quarantined (local-only writes); cluster rejoin: %s" %
                  (cycle, victim, "ok" if code == 0 else err.strip()), flush=True)
            if code != 0:
                state.problems.append("cycle %d: cluster rejoin %s failed: %s" %
                                      (cycle, victim, err.strip()))
                break
        state.completed = cycle
    writer.stop_ev.set()
    writer.join(timeout=30)
    state.writer_errors = dict(writer.errors)
    # every acknowledged write must be on every node of the surviving group
    state.keys = keys = writer.keys()
    if not wait_for(lambda: cl.healthy_state(NODE_IDS), args.heal_timeout, 0.2):
        state.problems.append("the group was not healthy at the end: %s" % cl.group())
    for n in NODE_IDS:
        def have_all(n=n):
            h = cl.keys(n)
            return h is not None and all(k in h for k in keys)
        wait_for(have_all, 30, 0.2)
        h = cl.keys(n)
        state.lost_by_node[n] = None if h is None else [k for k in keys if k not in h]
    state.primary, _ = cl.primary()
    for n, v in state.lost_by_node.items():
        if v is None:
            state.problems.append("%s could not be read at the end" % n)
        elif v:
            state.problems.append("%s lacks %d acknowledged writes, e.g. %s" % (n, len(v), v[:10]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--binary", default=os.environ.get("GS_BINARY") or
                    os.path.join(ROOT, "build", "gatestream"))
    ap.add_argument("--plugin-dir", default=os.environ.get("GS_PLUGIN_DIR") or
                    os.path.join(ROOT, "build", "plugins"))
    ap.add_argument("--heal-timeout", type=float, default=90.0,
                    help="seconds a cycle may wait for the group to heal")
    ap.add_argument("--failover-timeout", type=float, default=30.0,
                    help="seconds a cycle may wait for the first write on a new primary")
    ap.add_argument("--check-targets", action="store_true",
                    help="also fail when the median failover exceeds 3 s or p99 exceeds 5 s")
    ap.add_argument("--json", help="write the report as JSON to this file too")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()
    gslib.GATESTREAM = os.path.abspath(args.binary)
    gslib.PLUGIN_DIR = os.path.abspath(args.plugin_dir)
    if not os.access(gslib.GATESTREAM, os.X_OK):
        print("soak: %s is not an executable gatestream (build first, or --binary)" %
              gslib.GATESTREAM, file=sys.stderr)
        return 2
    if args.cycles < 1:
        print("soak: --cycles must be at least 1", file=sys.stderr)
        return 2

    tmp = tempfile.mkdtemp(prefix="gs-soak-")
    etcd = Etcd(tmp)
    state = State(args.cycles)
    holder = {}
    t0 = time.time()
    try:
        run(args, tmp, etcd, state, holder)
    except Exception as e:  # noqa: BLE001 - reported, and the exit status says it failed
        state.problems.append("the soak raised %s: %s" % (type(e).__name__, e))
    finally:
        if holder.get("writer") is not None:
            holder["writer"].stop_ev.set()
        if holder.get("cluster") is not None:
            holder["cluster"].stop_all()
        etcd.stop()

    srt = sorted(state.times)
    lost = state.lost_by_node.get(state.primary) if state.primary else None
    report = {
        "cycles": state.completed,
        "cycles_requested": args.cycles,
        "writes_acknowledged": len(state.keys),
        "writes_lost": len(lost) if lost is not None else None,
        "lost_by_node": {n: (None if v is None else len(v))
                         for n, v in state.lost_by_node.items()},
        "quarantined_and_rejoined": len(state.quarantines),
        "failover_s": {
            "median": nearest_rank(srt, 50) if srt else None,
            "p99": nearest_rank(srt, 99) if srt else None,
            "max": srt[-1] if srt else None,
            "min": srt[0] if srt else None,
            "all": [round(x, 3) for x in state.times],
        },
        "writer_errors": state.writer_errors,
        "seconds": round(time.time() - t0, 1),
        "problems": state.problems,
    }
    print("\nfailover soak: %d of %d cycles, %d writes acknowledged, %s lost, %d quarantined "
          "and rejoined, %.0f s" % (state.completed, args.cycles, len(state.keys),
                                    "?" if lost is None else len(lost), len(state.quarantines),
                                    report["seconds"]))
    met = None
    if srt:
        f = report["failover_s"]
        print("failover time (kill -9 -> first accepted write on the new primary): "
              "median %.2f s, p99 %.2f s, max %.2f s (n=%d)" %
              (f["median"], f["p99"], f["max"], len(srt)))
        met = f["median"] <= 3.0 and f["p99"] <= 5.0
        print("targets (median <= 3 s, p99 <= 5 s): %s" % ("met" if met else "NOT met"))
    if state.writer_errors:
        print("writer errors by code (retried with a new key): %s" % state.writer_errors)
    for pr in state.problems:
        print("PROBLEM: %s" % pr)
    if args.json:
        with open(args.json, "w") as fj:
            json.dump(report, fj, indent=2)
    if args.keep:
        print("logs kept in %s" % tmp)
    else:
        if holder.get("cluster") is not None:
            holder["cluster"].cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    ok = not state.problems and state.completed == args.cycles and lost == []
    if args.check_targets and not met:
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
