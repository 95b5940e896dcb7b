"""GET /metrics through the real server: 404 when server.metrics is off; the Prometheus text
format (content type, HELP/TYPE per family, parsable samples, cumulative histograms) when on;
counters that rise with traffic; route labels that are patterns, never raw paths; and the
authenticate hook chain in front of it when authenticate is true."""
import json
import math
import re
import time

from gslib import Server, check, error_code, finish
from wsclient import WSClient

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset(labels)): value}, {family: type}; fails the test on a bad line."""
    samples, types, helps = {}, {}, set()
    for line in text.split("\n"):
        if not line:
            continue
        if line.startswith("# HELP "):
            helps.add(line.split(" ")[2])
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            types[name] = typ
            continue
        m = SAMPLE.match(line)
        check(m is not None, "sample line parses: %r" % line)
        if not m:
            continue
        labels = dict(LABEL.findall(m.group(3) or ""))
        v = m.group(4)
        value = math.inf if v == "+Inf" else float(v)
        samples[(m.group(1), frozenset(labels.items()))] = value
    check(set(types) == helps, "every family has HELP and TYPE: %s vs %s" % (types, helps))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def check_histograms(samples, types):
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                d = dict(labels)
                le = d.pop("le")
                series.setdefault(frozenset(d.items()), []).append(
                    (math.inf if le == "+Inf" else float(le), v))
        check(series, "%s has series" % fam)
        for key, buckets in series.items():
            buckets.sort()
            counts = [c for _, c in buckets]
            check(counts == sorted(counts), "%s buckets are cumulative: %s" % (fam, buckets))
            check(buckets[-1][0] == math.inf, "%s ends with +Inf" % fam)
            check((fam + "_count", key) in samples and (fam + "_sum", key) in samples,
                  "%s has _sum and _count" % fam)
            check(samples.get((fam + "_count", key)) == buckets[-1][1],
                  "%s _count equals the +Inf bucket" % fam)


def scrape(srv, headers=None):
    st, body, hs = srv.request("GET", "/metrics", headers=headers, raw=True)
    check(st == 200, "GET /metrics answers 200: %s %s" % (st, body[:200]))
    check(hs.get("content-type", "").startswith("text/plain; version=0.0.4"),
          "exposition content type: %s" % hs.get("content-type"))
    return parse(body.decode("utf-8"))


# ---- disabled (the default): no such route ----
with Server() as srv:
    st, b, _ = srv.request("GET", "/metrics")
    check(st == 404 and error_code(b) == "NOT_FOUND", "metrics off: 404 NOT_FOUND: %s %s" % (st, b))

# ---- enabled, no authentication ----
with Server(extra_server="  metrics: { enabled: true, authenticate: false }\n") as srv:
    before, types = scrape(srv)
    for fam, typ in (("gatestream_http_requests_total", "counter"),
                     ("gatestream_http_request_duration_seconds", "histogram"),
                     ("gatestream_ws_messages_total", "counter"),
                     ("gatestream_db_writes_total", "counter"),
                     ("gatestream_db_queries_total", "counter"),
                     ("gatestream_db_group_commit_size", "histogram"),
                     ("gatestream_db_pending_writes", "gauge"),
                     ("gatestream_cdc_subscribers", "gauge"),
                     ("gatestream_db_size_bytes", "gauge"),
                     ("gatestream_db_wal_size_bytes", "gauge"),
                     ("gatestream_build_info", "gauge"),
                     ("process_resident_memory_bytes", "gauge"),
                     ("gatestream_uptime_seconds", "gauge")):
        check(types.get(fam) == typ, "%s is a %s: %s" % (fam, typ, types.get(fam)))
    check(any(n == "gatestream_build_info" and v == 1 for (n, _), v in before.items()),
          "build_info is 1")
    check(value(before, "process_resident_memory_bytes") > 0, "resident memory is reported")

    st, _, _ = srv.post("/db/main/execute", {"sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, v)"})
    check(st == 200, "create table: %s" % st)
    for i in range(5):
        st, _, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO t (v) VALUES (?)", "params": [i]})
        check(st == 200, "insert: %s" % st)
    for _ in range(3):
        st, _, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM t"})
        check(st == 200, "query: %s" % st)
    st, _, _ = srv.post("/db/nope/query", {"sql": "SELECT 1"})
    check(st == 404, "unknown database: %s" % st)
    srv.request("GET", "/no/such/path")

    after, types = scrape(srv)
    q = dict(route="/db/{id}/query", method="POST")
    check(value(after, "gatestream_http_requests_total", status="200", **q) -
          value(before, "gatestream_http_requests_total", status="200", **q) == 3,
          "three answered queries counted")
    check(value(after, "gatestream_http_requests_total", status="404", **q) >= 1,
          "the unknown database's 404 is counted on the route pattern")
    check(value(after, "gatestream_http_requests_total", route="/db/{id}/execute", method="POST",
                status="200") == 6, "six executes counted")
    check(value(after, "gatestream_http_requests_total", route="unmatched", method="GET",
                status="404") >= 1, "an unmatched path is counted as 'unmatched'")
    check(value(after, "gatestream_http_requests_total", route="/metrics", method="GET",
                status="200") >= 1, "the first scrape is counted")
    check(not any("/db/main" in v or "/db/nope" in v or "/no/such" in v
                  for (_, labels) in after for _, v in labels),
          "no label carries a raw path")
    check(value(after, "gatestream_http_request_duration_seconds_count", route="/db/{id}/query",
                method="POST")
          >= 4, "query latency histogram counts every answer")
    check(value(after, "gatestream_db_writes_total", db="main") -
          value(before, "gatestream_db_writes_total", db="main") >= 6, "writer ran the writes")
    check(value(after, "gatestream_db_queries_total", db="main") -
          value(before, "gatestream_db_queries_total", db="main") >= 3, "queries counted")
    check(value(after, "gatestream_db_group_commit_size_count", db="main") >= 1,
          "group commit histogram observed the writer")
    check(value(after, "gatestream_db_size_bytes", db="main") > 0, "database file size")
    check(value(after, "gatestream_db_pending_writes", db="main") == 0, "no pending writes")
    check(value(after, "gatestream_cdc_subscribers", db="main") == 0, "no subscribers")
    check(value(after, "gatestream_uptime_seconds") >= value(before, "gatestream_uptime_seconds"),
          "uptime does not go back")
    check_histograms(after, types)

# ---- WebSocket messages ----
WS_PLUGIN = """
  - name: ws
    kind: client_transport
"""
with Server(extra_plugins=WS_PLUGIN,
            extra_server="  metrics: { enabled: true, authenticate: false }\n") as srv:
    deadline = time.time() + 10
    while "' ready (gatestream" not in srv.read_log() and time.time() < deadline:
        time.sleep(0.02)  # the ws transport starts after /health answers; the log says when
    ws = WSClient.connect("127.0.0.1", srv.port, "/db/main", protocols=["sirannon.v1"])
    ws.send_json({"type": "query", "id": "q1", "sql": "SELECT 1 AS x"})
    reply = json.loads(ws.recv())
    check(reply.get("type") == "result" and reply.get("id") == "q1", "ws query answered: %s" % reply)
    ws.send_text("this is not json")
    reply = json.loads(ws.recv())
    check(reply.get("type") == "error", "ws garbage refused: %s" % reply)
    ws.close()
    samples, types = scrape(srv)
    check(value(samples, "gatestream_ws_messages_total", type="query", outcome="accepted") == 1,
          "the ws query is counted")
    check(value(samples, "gatestream_ws_messages_total", type="invalid", outcome="refused") == 1,
          "the unparsable ws message is counted as refused")

# ---- enabled, authenticate: true (the default) with auth_token ----
PLUGINS = """
  - name: tokens
    plugin: auth_token
    kind: hook
    config:
      tokens:
        - { token: ops-token, name: ops, databases: ["*"] }
"""
with Server(extra_plugins=PLUGINS, extra_server="  metrics: { enabled: true }\n") as srv:
    st, b, _ = srv.request("GET", "/metrics")
    check(st == 401 and error_code(b) == "UNAUTHORIZED", "no token: %s %s" % (st, b))
    st, b, _ = srv.request("GET", "/metrics", headers={"Authorization": "Bearer wrong"})
    check(st == 401, "wrong token: %s" % st)
    samples, types = scrape(srv, headers={"Authorization": "Bearer ops-token"})
    check(value(samples, "gatestream_http_requests_total", route="/metrics", method="GET",
                status="401") == 2, "refused scrapes are counted")

finish()
