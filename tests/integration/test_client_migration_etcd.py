"""A libgatestream-client subscription follows a failover (spec 06: "When routing metadata
changes in topology mode, active subscriptions are re-established on the new endpoint; a
migrated subscription restarts live from the new endpoint"), with a real etcd-server and three
real gatestream processes in coordinator mode (etcd_cluster.py: config/cluster/etcd with free
ports, plus the ws client transport so subscriptions can be served).

gs-client-sub-probe (client/tests/sub_probe.c, path in GS_CLIENT_SUB_PROBE) opens a
coordinator-mode client on the three nodes, subscribes to table t and prints one line per
event. The test writes a row on the primary and sees it; kills -9 the node the subscription
is on (the primary: reads, and so subscriptions, follow read preference primary); waits for
the new primary; expects the probe to report DISCONNECTED, then RESYNC with migrated = 1 and
another endpoint, and no ERROR; then a row written on the new primary after the failover
arrives in the same subscription. Every wait is bounded."""
import os
import signal
import sys
import tempfile
import time

from gslib import check, finish
from client_probe import PROBE, Probe, finish_run, node_of
from etcd_cluster import NODE_IDS, Cluster, Etcd, wait_for

FAILOVER_BOUND = 30.0

tmp = tempfile.mkdtemp(prefix="gs-client-migration-it-")
etcd = Etcd(tmp)
cl = None
probe = None


def change_of(key):
    return lambda l: l.startswith("CHANGE %d " % key)


def main():
    global cl, probe
    if not PROBE or not os.path.exists(PROBE):
        check(False, "GS_CLIENT_SUB_PROBE names no built probe: '%s'" % PROBE)
        return
    try:
        etcd.start()
        cl = Cluster(tmp, etcd)
        ws = "  - name: http\n    kind: client_transport\n"
        for n in NODE_IDS:  # subscriptions need the WebSocket client transport
            if ws not in cl.yaml[n]:
                raise RuntimeError("config/cluster/etcd/%s.yaml changed: no http plugin" % n)
            cl.yaml[n] = cl.yaml[n].replace(ws, ws + "  - name: ws\n    kind: client_transport\n")
            with open(cl.config[n], "w") as f:
                f.write(cl.yaml[n])
        for n in NODE_IDS:
            cl.start(n)
        p = wait_for(lambda: cl.healthy_state(NODE_IDS) and cl.primary()[0], 40)
        check(bool(p), "the cluster comes up healthy: %s" % cl.group())
        if not p:
            return
        st, b, _ = cl.execute(p, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        check(st == 200, "create table: %s %s" % (st, b))
        # the table reaches every node before a subscription may land there
        ok = wait_for(lambda: all(cl.keys(n) == set() for n in NODE_IDS), 30, 0.2)
        check(bool(ok), "the table is on every node")

        probe = Probe(["main", "t"] + ["http://127.0.0.1:%d" % cl.http[n] for n in NODE_IDS])
        line = probe.expect(lambda l: l.startswith("SUBSCRIBED "), 30)
        check(line is not None, "the probe subscribes (stderr: %s)" % probe.stderr())
        if line is None:
            return
        on = node_of(cl, line.split(" ", 1)[1])
        check(on == p, "the subscription is routed to the primary %s: %s" % (p, line))
        st, b, _ = cl.execute(p, "INSERT INTO t (id, v) VALUES (1, 'before')")
        check(st == 200, "write before the failover: %s %s" % (st, b))
        check(probe.expect(change_of(1), 15) is not None,
              "the row written before the failover arrives: %s" % probe.all)

        # the node the subscription is on dies
        t0 = time.time()
        cl.kill9(on)
        new_p, term = cl.wait_primary(FAILOVER_BOUND, not_node=on)
        check(new_p is not None, "a new primary within %.0f s: %s" % (FAILOVER_BOUND, cl.group()))
        if new_p is None:
            return
        print("failover %s -> %s (term %d) in %.1f s" % (on, new_p, term, time.time() - t0),
              flush=True)
        mig = probe.expect(lambda l: l.startswith("RESYNC 1 ") or l.startswith("ERROR "),
                           FAILOVER_BOUND)
        check(mig is not None and mig.startswith("RESYNC 1 "),
              "the subscription migrates (RESYNC migrated=1): %s; lines: %s" % (mig, probe.all))
        if mig is None or not mig.startswith("RESYNC 1 "):
            return
        moved_to = node_of(cl, mig.split(" ")[2])
        check(moved_to in NODE_IDS and moved_to != on,
              "migrated to another live node: %s (killed %s)" % (mig, on))
        check(probe.seen(lambda l: l.startswith("DISCONNECTED ")) != [],
              "DISCONNECTED came first: %s" % probe.all)
        print("subscription moved %s -> %s in %.1f s after the kill" %
              (on, moved_to, time.time() - t0), flush=True)

        # a row written on the new primary after the failover reaches the same subscription;
        # a later routing change (the new node repairing, say) may move it once more, so a
        # few rows are tried, each waited for with a bound
        arrived = None
        for k in range(8):
            key = 100 + k
            st, b, _ = cl.execute(new_p, "INSERT INTO t (id, v) VALUES (?, 'after')", [key])
            if st != 200:
                new_p, _ = cl.wait_primary(FAILOVER_BOUND, not_node=on)
                continue
            if probe.expect(change_of(key), 8) is not None:
                arrived = key
                break
        check(arrived is not None,
              "a row written after the failover arrives in the subscription: %s" % probe.all)
        check(probe.seen(lambda l: l.startswith("ERROR ")) == [],
              "the subscription never ended: %s" % probe.all)
        code = probe.quit()
        check(code == 0, "the probe exits 0 (got %s): %s" % (code, probe.stderr()))
        cl.stop_running_checked()
    finally:
        finish_run(probe, cl, etcd, tmp)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
    finish()
