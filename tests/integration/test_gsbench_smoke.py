"""Smoke run of gatestream-bench (bench/gsbench): short runs against in-process SQLite and
against a real gatestream node over HTTP and WebSocket (through libgatestream-client), a tiny
sweep, and the replication mode pointed at one node (primary and subscriber on the same node:
the code path, not a lag figure). Checks the outputs exist and are sane: nonzero throughput,
ordered percentiles, the rows loaded on the node, the markdown table and a well-formed SVG.
The benchmark itself is not a test; these runs are 2 seconds at a low rate."""
import csv
import os
import subprocess
import sys
import tempfile
import shutil
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gslib import Server, check, finish  # noqa: E402

BENCH = os.environ.get("GS_BENCH_BINARY", "")
WS_PLUGIN = """
  - name: ws
    kind: client_transport
"""


def bench(args, out, timeout=180):
    """Run gatestream-bench; returns (exit status, stdout + stderr)."""
    p = subprocess.run([BENCH] + args + ["--out", out], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    text = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        print(text, flush=True)
    return p.returncode, text


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def sane_step(row, what):
    check(float(row["achieved"]) > 0, "%s: nonzero throughput (%s)" % (what, row["achieved"]))
    ps = [float(row[k]) for k in ("p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")]
    check(ps[0] > 0, "%s: p50 > 0 (%s)" % (what, ps))
    check(all(a <= b for a, b in zip(ps, ps[1:])), "%s: percentiles ordered %s" % (what, ps))
    check(int(row["measured"]) > 0, "%s: answers measured" % what)
    check(int(row["errors"]) == 0 and int(row["timeouts"]) == 0,
          "%s: no errors or timeouts (%s, %s; %s)" % (what, row["errors"], row["timeouts"],
                                                      row["first_error"]))


def steps_for(out, target, workload):
    return [r for r in rows_of(os.path.join(out, "steps.csv"))
            if r["target"] == target and r["workload"] == workload]


def main():
    check(BENCH != "" and os.access(BENCH, os.X_OK), "GS_BENCH_BINARY is set: %r" % BENCH)
    if not BENCH:
        finish()
    out = tempfile.mkdtemp(prefix="gs-gsbench-")
    try:
        # Usage errors name the fix and exit 1.
        st, text = bench(["--target", "nope", "--workload", "point-select", "--rows", "10",
                          "--rate", "10", "--duration", "1"], out)
        check(st == 1 and "--target must be" in text, "a bad target is refused: %r" % text)
        st, text = bench(["--target", "sqlite", "--workload", "point-select", "--rows", "10",
                          "--duration", "1"], out)
        check(st == 1 and "--rate" in text, "--rate or --sweep is required: %r" % text)

        # In-process SQLite: a fixed rate, then a two-rung sweep.
        st, _ = bench(["--target", "sqlite", "--workload", "point-select", "--rows", "2000",
                       "--rate", "500", "--duration", "2", "--warmup", "0.5"], out)
        check(st == 0, "sqlite point-select run")
        for r in steps_for(out, "sqlite", "point-select"):
            sane_step(r, "sqlite point-select")
        st, text = bench(["--target", "sqlite", "--workload", "tpcc", "--rows", "500",
                          "--sweep", "--start-rate", "250", "--max-rate", "500", "--bisect", "0",
                          "--duration", "1", "--warmup", "0.5", "--durability", "relaxed"], out)
        check(st == 0, "sqlite tpcc sweep")
        tp = steps_for(out, "sqlite", "tpcc")
        check(len(tp) >= 1 and all(r["kind"] == "sweep" for r in tp), "sweep steps: %s" % tp)
        check("operating point: sqlite tpcc relaxed" in text, "the operating point is printed")

        # A real node, over HTTP and WebSocket through the client library.
        with Server(extra_plugins=WS_PLUGIN, extra_databases="    synchronous: full") as srv:
            url = "http://127.0.0.1:%d" % srv.port
            st, _ = bench(["--target", "gatestream-http", "--workload", "ycsb-a", "--rows",
                           "1000", "--rate", "300", "--duration", "2", "--warmup", "0.5",
                           "--url", url, "--connections", "4"], out)
            check(st == 0, "gatestream-http ycsb-a run")
            code, body, _ = srv.post("/db/main/query",
                                     {"sql": "SELECT count(*) AS n FROM usertable"})
            check(code == 200 and body["rows"][0]["n"] == 1000,
                  "the node holds the 1,000 loaded rows: %s" % body)
            for r in steps_for(out, "gatestream-http", "ycsb-a"):
                sane_step(r, "gatestream-http ycsb-a")
            st, _ = bench(["--target", "gatestream-ws", "--workload", "point-select", "--rows",
                           "1000", "--rate", "500", "--duration", "2", "--warmup", "0.5",
                           "--url", url], out)
            check(st == 0, "gatestream-ws point-select run")
            for r in steps_for(out, "gatestream-ws", "point-select"):
                sane_step(r, "gatestream-ws point-select")
            st, _ = bench(["--target", "gatestream-ws", "--workload", "tpcc", "--rows", "500",
                           "--rate", "200", "--duration", "2", "--warmup", "0.5", "--url", url],
                          out)
            check(st == 0, "gatestream-ws tpcc run (transactions)")
            for r in steps_for(out, "gatestream-ws", "tpcc"):
                sane_step(r, "gatestream-ws tpcc")
            code, body, _ = srv.post("/db/main/query",
                                     {"sql": "SELECT count(*) AS n FROM orders"})
            check(code == 200 and body["rows"][0]["n"] > 0, "new orders were written: %s" % body)
            # Replication mode, primary and subscriber on one node (the code path only).
            st, text = bench(["--replication", "--url", url, "--replica-url", url, "--rate",
                              "200", "--duration", "1"], out)
            check(st == 0, "replication mode against one node: %s" % text[-400:])
            check("0 missing" in text, "every row reached the subscriber: %s" % text[-400:])

        # The outputs.
        pts = rows_of(os.path.join(out, "points.csv"))
        check(len(pts) >= 4, "points.csv has a row per run: %d" % len(pts))
        with open(os.path.join(out, "report.md")) as f:
            md = f.read()
        check("| Point-select |" in md and "#### Acceptance goals" in md,
              "report.md has the tables and the goals")
        for d in ("full", "relaxed"):
            path = os.path.join(out, "chart-%s.svg" % d)
            check(os.path.exists(path), "%s exists" % path)
            if os.path.exists(path):
                root = ET.parse(path).getroot()
                check(root.tag.endswith("svg") and len(root.findall(".//{*}polyline")) >= 1,
                      "%s is an SVG with at least one line" % path)
        check(os.path.exists(os.path.join(out, "replication.md")), "replication.md written")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    finish()


if __name__ == "__main__":
    main()
