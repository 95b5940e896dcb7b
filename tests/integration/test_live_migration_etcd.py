"""A libgatestream-client LIVE QUERY follows a failover (spec 06: when routing changes in
topology mode, active subscriptions are re-established on the new endpoint; client.h: "A live
query moves the same way (an update with `revalidating` set, then the rows read afresh on the
new endpoint)"), with a real etcd-server and three real gatestream processes in coordinator
mode (etcd_cluster.py: config/cluster/etcd with free ports, plus the ws client transport so
live queries can be served, and one registered read `liveT` over table t on every node, added
to the temporary copies of the configs only).

gs-client-sub-probe --live (client/tests/sub_probe.c, path in GS_CLIENT_SUB_PROBE) opens a
coordinator-mode client on the three nodes, opens a live query over `liveT` and prints the
ids it holds after every update. The test sees the row written before the query opened in
its first rows and a row written afterwards arrive as a live update; waits until both rows
are on every node; kills -9 the node the live query is on (the primary: reads, and so live
queries, follow read preference primary); waits for the new primary; expects REVALIDATING,
then fresh rows (holding both rows) with no ERROR, and reads now routed to a live node; then
a row written on the new primary after the failover arrives in the same live query. Every
wait is bounded."""
import os
import signal
import sys
import tempfile
import time

from gslib import check, finish
from client_probe import PROBE, Probe, finish_run, node_of
from etcd_cluster import NODE_IDS, Cluster, Etcd, wait_for

FAILOVER_BOUND = 30.0
READ = "liveT"
# The registered read the live query runs, on every node (server.operations, spec 05).
OPERATIONS = ("  operations:\n"
              "    - { database: main, name: %s, kind: read,\n"
              "        sql: \"SELECT id, v FROM t ORDER BY id\" }\n" % READ)

tmp = tempfile.mkdtemp(prefix="gs-live-migration-it-")
etcd = Etcd(tmp)
cl = None
probe = None


def ids_of(line, prefix="LIVE "):
    """The ids of a `LIVE <count> <ids>` (or ROWS) line as a set, or None for another line."""
    if not line.startswith(prefix):
        return None
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] == "-":
        return set()
    return {int(x) for x in parts[2].split(",") if x != "?"}


def live_with(*keys):
    return lambda l: (ids_of(l) or set()) >= set(keys)


def is_error(line):
    return line.startswith("ERROR ")


def main():
    global cl, probe
    if not PROBE or not os.path.exists(PROBE):
        check(False, "GS_CLIENT_SUB_PROBE names no built probe: '%s'" % PROBE)
        return
    try:
        etcd.start()
        cl = Cluster(tmp, etcd)
        ws = "  - name: http\n    kind: client_transport\n"
        sql_on = "  accept_sql: true\n"
        for n in NODE_IDS:  # live queries need the ws transport and the registered read
            for needle in (ws, sql_on):
                if needle not in cl.yaml[n]:
                    raise RuntimeError("config/cluster/etcd/%s.yaml changed: no '%s'" %
                                       (n, needle.strip()))
            cl.yaml[n] = cl.yaml[n].replace(ws, ws + "  - name: ws\n    kind: client_transport\n")
            cl.yaml[n] = cl.yaml[n].replace(sql_on, sql_on + OPERATIONS)
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
        # the table reaches every node before the live query may land there
        ok = wait_for(lambda: all(cl.keys(n) == set() for n in NODE_IDS), 30, 0.2)
        check(bool(ok), "the table is on every node")
        st, b, _ = cl.execute(p, "INSERT INTO t (id, v) VALUES (1, 'initial')")
        check(st == 200, "write before the live query opens: %s %s" % (st, b))

        probe = Probe(["--live", READ, "main"] +
                      ["http://127.0.0.1:%d" % cl.http[n] for n in NODE_IDS])
        line = probe.expect(lambda l: l.startswith("SUBSCRIBED ") or is_error(l), 30)
        check(line is not None and line.startswith("SUBSCRIBED "),
              "the probe opens the live query: %s (stderr: %s)" % (line, probe.stderr()))
        if line is None or not line.startswith("SUBSCRIBED "):
            return
        on = node_of(cl, line.split(" ", 1)[1])
        check(on == p, "the live query is routed to the primary %s: %s" % (p, line))
        first = [ids_of(l) for l in probe.seen(lambda l: l.startswith("LIVE "))]
        check(first[:1] == [{1}],
              "the first rows of the live query hold the initial row: %s" % probe.all)
        st, b, _ = cl.execute(p, "INSERT INTO t (id, v) VALUES (2, 'before')")
        check(st == 200, "write before the failover: %s %s" % (st, b))
        check(probe.expect(live_with(1, 2), 15) is not None,
              "the row written before the failover arrives as a live update: %s" % probe.all)
        # both rows on every node, so the fresh rows after the move must hold them
        ok = wait_for(lambda: all(cl.keys(n) == {1, 2} for n in NODE_IDS), 30, 0.2)
        check(bool(ok), "both rows are on every node before the kill")

        # the node the live query is on dies
        t0 = time.time()
        mark = len(probe.all)
        cl.kill9(on)
        new_p, term = cl.wait_primary(FAILOVER_BOUND, not_node=on)
        check(new_p is not None, "a new primary within %.0f s: %s" % (FAILOVER_BOUND, cl.group()))
        if new_p is None:
            return
        print("failover %s -> %s (term %d) in %.1f s" % (on, new_p, term, time.time() - t0),
              flush=True)
        # client.h: an update with `revalidating` set, then the rows read afresh on the new
        # endpoint (the killed node never comes back, so fresh rows come from another node)
        fresh = probe.expect(lambda l: l.startswith("LIVE ") or is_error(l), FAILOVER_BOUND)
        after = probe.all[mark:]
        check(fresh is not None and fresh.startswith("LIVE "),
              "the live query re-reads its rows after the kill: %s; lines: %s" %
              (fresh, after))
        if fresh is None or not fresh.startswith("LIVE "):
            return
        check(ids_of(fresh) == {1, 2},
              "the fresh rows hold both rows written before the kill: %s" % fresh)
        check("REVALIDATING" in after and after.index("REVALIDATING") < after.index(fresh),
              "REVALIDATING came before the fresh rows: %s" % after)
        probe.command("route")
        route = probe.expect(lambda l: l.startswith("ROUTE"), 15)
        moved_to = node_of(cl, route.split(" ")[1]) if route and route.startswith("ROUTE ") else None
        check(moved_to in NODE_IDS and moved_to != on,
              "reads (and so the live query) now go to another live node: %s (killed %s)" %
              (route, on))
        print("live query re-read on %s in %.1f s after the kill" %
              (moved_to, time.time() - t0), flush=True)

        # a row written on the new primary after the failover reaches the same live query; a
        # later routing change (the new node repairing, say) may move it once more, so a few
        # rows are tried, each waited for with a bound
        arrived = None
        for k in range(8):
            key = 100 + k
            st, b, _ = cl.execute(new_p, "INSERT INTO t (id, v) VALUES (?, 'after')", [key])
            if st != 200:
                new_p, _ = cl.wait_primary(FAILOVER_BOUND, not_node=on)
                if new_p is None:
                    break
                continue
            if probe.expect(live_with(1, 2, key), 8) is not None:
                arrived = key
                break
        check(arrived is not None,
              "a row written after the failover arrives in the live query: %s" % probe.all)
        if arrived is not None:
            probe.command("rows")
            rows = probe.expect(lambda l: l.startswith("ROWS "), 15)
            check(rows is not None and (ids_of(rows, "ROWS ") or set()) >= {1, 2, arrived},
                  "gs_client_live_rows holds the rows before and after the failover: %s" % rows)
        check(probe.seen(is_error) == [], "the live query never ended: %s" % probe.all)
        print("probe lines from the kill on: %s" % probe.all[mark:], flush=True)
        code = probe.quit()
        check(code == 0, "the probe exits 0 (got %s): %s" % (code, probe.stderr()))
        cl.stop_running_checked()
    finally:
        finish_run(probe, cl, etcd, tmp)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    main()
    finish()
