"""The WebSocket protocol of spec 05 against the real server (plugins http + ws): subprotocol
negotiation, the upgrade's refusals and close codes (404, 400, 4401, 4403, 1008, 1013 on
SIGTERM, 4290 past the outbound bound), every message type and error, many requests in flight
on one socket, change subscriptions (every committed change exactly once and in order with
txEnd on the last change of each transaction while four HTTP writers run, resumption with
sinceSeq, resync for a foreign epoch) and live queries over a registered read.
Every wait is bounded."""
import json
import os
import random
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gslib import Server, check, error_code, finish  # noqa: E402
from wsclient import Closed, HandshakeRefused, WSClient  # noqa: E402

WS_PLUGIN = """
  - name: ws
    kind: client_transport
"""
OPERATIONS = """
  operations:
    - { database: main, name: byOwner, kind: read, args: [owner],
        sql: "SELECT id, owner, qty FROM items WHERE owner = :owner ORDER BY id" }
    - { database: main, name: ownerCounts, kind: read,
        sql: "SELECT owner, count(*) AS n FROM items GROUP BY owner" }
    - { database: main, name: addItem, kind: write, args: [owner, qty],
        statements: [ { sql: "INSERT INTO items (owner, qty) VALUES (:owner, :qty)" } ] }
"""


def node_ready(srv, timeout=10.0):
    """The http transport answers /health before the ws transport has started (transports
    start in config order): wait for the node's own "ready" line, which follows them all."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "' ready (gatestream" in srv.read_log():
            return srv
        time.sleep(0.02)
    raise RuntimeError("the node never logged ready:\n" + srv.read_log())


class WSServer(Server):
    def start(self, timeout=20.0):
        Server.start(self, timeout)
        return node_ready(self)


def connect(srv, path="/db/main", protocols=("sirannon.v1",), **kw):
    return WSClient.connect("127.0.0.1", srv.port, path, protocols=list(protocols) or None, **kw)


class Conn:
    """A WebSocket with the frames not yet claimed, so replies can be matched by id/type."""

    def __init__(self, ws):
        self.ws = ws
        self.backlog = []

    def send(self, obj):
        self.ws.send_json(obj)

    def take(self, pred, timeout=15.0, what="frame"):
        for i, m in enumerate(self.backlog):
            if pred(m):
                return self.backlog.pop(i)
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no %s within %.0fs" % (what, timeout))
            m = self.ws.recv_json(left)
            if pred(m):
                return m
            self.backlog.append(m)

    def reply(self, msg_id, timeout=15.0):
        return self.take(lambda m: m.get("id") == msg_id and m.get("type") in
                         ("result", "error", "subscribed", "unsubscribed"), timeout,
                         "reply to %s" % msg_id)

    def request(self, obj, timeout=15.0):
        self.send(obj)
        return self.reply(obj.get("id"), timeout)

    def close(self):
        self.ws.close()


def err_of(m):
    return (m.get("error") or {}).get("code") if m.get("type") == "error" else None


def expect_close(ws, timeout=10.0):
    try:
        (code, reason), _ = ws.wait_close(timeout)
        return code, reason
    except TimeoutError:
        return None, None


# ---------------------------------------------------------------------------------------
# 1. Upgrade: subprotocols, refusals, 1008
# ---------------------------------------------------------------------------------------
def test_upgrade(srv):
    ws = connect(srv)
    check(ws.protocol == "sirannon.v1", "sirannon.v1 selected: %r" % ws.protocol)
    ws.close()
    ws = WSClient.connect("127.0.0.1", srv.port, "/db/main",
                          protocol_header="  bearer.abc ,   sirannon.v1  ")
    check(ws.protocol == "sirannon.v1", "offer with spaces and another value: %r" % ws.protocol)
    ws.close()
    ws = connect(srv, protocols=())
    check(ws.protocol is None, "no offer, none selected: %r" % ws.protocol)
    c = Conn(ws)
    r = c.request({"type": "query", "id": "1", "sql": "SELECT 1 AS x"})
    check(r.get("data") == {"rows": [{"x": 1}]}, "works without a subprotocol: %s" % r)
    c.close()
    try:
        connect(srv, protocols=("graphql-ws", "sirannon.v2"))
        check(False, "an offer without sirannon.v1 must be refused")
    except HandshakeRefused as e:
        check(e.status == 400, "400 for the wrong subprotocol: %s" % e.status)
        body = e.json()
        check(error_code(body) == "UNSUPPORTED_SUBPROTOCOL", "UNSUPPORTED_SUBPROTOCOL: %s" % body)
    for path in ("/db/main/query", "/nowhere"):
        try:
            connect(srv, path=path)
            check(False, "upgrade at %s must be refused" % path)
        except HandshakeRefused as e:
            check(e.status == 404 and error_code(e.json()) == "NOT_FOUND",
                  "404 NOT_FOUND at %s: %s %s" % (path, e.status, e.body))
        except Closed as e:
            check(False, "upgrade at %s closed instead of 404: %s" % (path, e))
    ws = connect(srv, path="/db/nope")
    code, reason = expect_close(ws)
    check(code == 1008, "unknown database closes 1008: %s %r" % (code, reason))
    check((reason or "").startswith("DATABASE_NOT_FOUND"), "reason names the code: %r" % reason)


# ---------------------------------------------------------------------------------------
# 2. Messages and their errors
# ---------------------------------------------------------------------------------------
def test_messages(srv):
    c = Conn(connect(srv))
    ws = c.ws
    r = c.request({"type": "execute", "id": "mk", "sql":
                   "CREATE TABLE items (id INTEGER PRIMARY KEY, owner TEXT, qty INTEGER)"})
    check(r.get("type") == "result", "create: %s" % r)
    r = c.request({"type": "execute", "id": "e", "sql": "INSERT INTO items (owner, qty) VALUES (?, ?)",
                   "params": ["alice", 1]})
    check(r.get("data") == {"changes": 1, "lastInsertRowId": 1}, "execute: %s" % r)
    r = c.request({"type": "transaction", "id": "t", "statements": [
        {"sql": "INSERT INTO items (owner, qty) VALUES ('bob', 2)"},
        {"sql": "UPDATE items SET qty = qty + 1 WHERE owner = :o", "params": {"o": "bob"}}]})
    res = (r.get("data") or {}).get("results") or []
    check(len(res) == 2 and res[1].get("changes") == 1, "transaction: %s" % r)
    r = c.request({"type": "batch", "id": "b", "sql": "INSERT INTO items (owner, qty) VALUES (?, ?)",
                   "paramsBatch": [["carol", 1], ["dan", {"__sirannon_int": "9007199254740993"}]]})
    check(len((r.get("data") or {}).get("results") or []) == 2, "batch: %s" % r)
    r = c.request({"type": "load", "id": "l", "sql": "INSERT INTO items (owner, qty) VALUES (?, ?)",
                   "paramsBatch": [["e", 1], ["f", 2]], "durability": "normal"})
    check((r.get("data") or {}).get("rowsLoaded") == 2, "load: %s" % r)
    r = c.request({"type": "query", "id": "q", "sql": "SELECT qty FROM items WHERE owner = ?",
                   "params": ["dan"], "readConcern": {"level": "local"}})
    check(r.get("data") == {"rows": [{"qty": {"__sirannon_int": "9007199254740993"}}]},
          "query with a big integer: %s" % r)
    # a message split over continuation frames
    ws.send_fragmented(json.dumps({"type": "query", "id": "frag", "sql": "SELECT 'fragmented' AS v"}), 4)
    r = c.reply("frag")
    check(r.get("data") == {"rows": [{"v": "fragmented"}]}, "fragmented message: %s" % r)
    # ping is answered
    ws.ping(b"are-you-there")
    r = c.request({"type": "query", "id": "after-ping", "sql": "SELECT 1 AS one"})
    check(r.get("type") == "result", "query after ping: %s" % r)
    check(b"are-you-there" in ws.pongs, "pong echoes the ping payload: %r" % ws.pongs)

    def expect(raw, code, msg_id):
        if isinstance(raw, str):
            ws.send_text(raw)
        else:
            ws.send_json(raw)
        m = c.take(lambda m: m.get("type") == "error" and m.get("id") == msg_id, 10,
                   "error %s" % code)
        check(err_of(m) == code, "%s -> %s (got %s)" % (str(raw)[:80], code, m))

    expect("{not json", "INVALID_JSON", "")
    expect("[1]", "INVALID_MESSAGE", "")
    expect({"id": "x"}, "INVALID_MESSAGE", "x")
    expect({"type": "query"}, "INVALID_MESSAGE", "")
    expect({"type": "query", "id": 7}, "INVALID_MESSAGE", "7")
    expect({"type": "nope", "id": "u"}, "UNKNOWN_TYPE", "u")
    expect({"type": "query", "id": "s", "sql": 5}, "INVALID_MESSAGE", "s")
    expect({"type": "query", "id": "p", "sql": "SELECT ?", "params": [{"__sirannon_blob": "XYZ"}]},
           "INVALID_MESSAGE", "p")
    expect({"type": "query", "id": "rc", "sql": "SELECT 1", "readConcern": {"level": "strong"}},
           "INVALID_MESSAGE", "rc")
    expect({"type": "transaction", "id": "tx", "statements": []}, "INVALID_MESSAGE", "tx")
    expect({"type": "batch", "id": "bt", "sql": "x", "paramsBatch": []}, "INVALID_MESSAGE", "bt")
    expect({"type": "load", "id": "ld", "sql": "x", "paramsBatch": [[1]], "durability": "fast"},
           "INVALID_MESSAGE", "ld")
    expect({"type": "transaction", "id": "nm", "name": "addItem"}, "INVALID_MESSAGE", "nm")
    expect({"type": "query", "id": "qe", "sql": "SELECT * FROM missing"}, "QUERY_ERROR", "qe")
    expect({"type": "query", "id": "fs", "sql": "SELECT * FROM _sirannon_changes"}, "FORBIDDEN_SQL", "fs")
    expect({"type": "subscribe", "id": "sb"}, "INVALID_MESSAGE", "sb")
    expect({"type": "subscribe", "id": "sq", "table": "items", "sinceSeq": 5}, "INVALID_MESSAGE", "sq")
    expect({"type": "subscribe", "id": "tb", "tables": ["items", "x"]}, "INVALID_MESSAGE", "tb")
    expect({"type": "subscribe", "id": "dv", "table": "items", "deviceId": "0" * 32}, "SYNC_UNSUPPORTED", "dv")
    expect({"type": "ack", "id": "ak", "deviceId": "0" * 32, "seq": "3"}, "SYNC_UNSUPPORTED", "ak")
    expect({"type": "unsubscribe", "id": "none"}, "SUBSCRIPTION_NOT_FOUND", "none")
    expect({"type": "subscribe", "id": "ce", "table": "no_such_table"}, "CDC_ERROR", "ce")
    # registered operations (no identity on this server)
    r = c.request({"type": "execute", "id": "ne", "name": "addItem", "args": {"owner": "gus", "qty": 3}})
    check(len((r.get("data") or {}).get("results") or []) == 1, "named execute: %s" % r)
    r = c.request({"type": "query", "id": "nq", "name": "byOwner", "args": {"owner": "gus"}})
    check([x["qty"] for x in (r.get("data") or {}).get("rows", [])] == [3], "named query: %s" % r)
    expect({"type": "query", "id": "uq", "name": "nope"}, "UNKNOWN_QUERY", "uq")
    expect({"type": "query", "id": "ma", "name": "byOwner"}, "MISSING_ARGUMENT", "ma")
    expect({"type": "query", "id": "an", "name": "byOwner", "args": {"owner": "x", "extra": 1}},
           "ARGUMENT_NOT_ALLOWED", "an")
    # an oversized message is refused and the connection stays usable
    ws.send_text(json.dumps({"type": "query", "id": "big", "sql": "SELECT '" + "x" * 70000 + "'"}))
    m = c.take(lambda m: m.get("type") == "error", 10, "PAYLOAD_TOO_LARGE")
    check(err_of(m) == "PAYLOAD_TOO_LARGE", "oversized message: %s" % m)
    r = c.request({"type": "query", "id": "still", "sql": "SELECT 2 AS two"})
    check(r.get("data") == {"rows": [{"two": 2}]}, "the connection survives an oversized message: %s" % r)

    # many requests in flight on one socket: each answered exactly once
    n = 1000
    for i in range(n):
        if i % 3 == 0:
            ws.send_json({"type": "execute", "id": "m%d" % i,
                          "sql": "INSERT INTO items (owner, qty) VALUES ('many', ?)", "params": [i]})
        else:
            ws.send_json({"type": "query", "id": "m%d" % i, "sql": "SELECT ? AS v", "params": [i]})
    seen = {}
    deadline = time.time() + 60
    while len(seen) < n and time.time() < deadline:
        m = c.take(lambda m: str(m.get("id", "")).startswith("m"), 30, "in-flight answer")
        seen[m["id"]] = seen.get(m["id"], 0) + 1
        i = int(m["id"][1:])
        if i % 3:
            check(m.get("data") == {"rows": [{"v": i}]}, "answer %d: %s" % (i, m))
    check(len(seen) == n and all(v == 1 for v in seen.values()),
          "%d requests in flight each answered once (%d answered)" % (n, len(seen)))
    c.close()


# ---------------------------------------------------------------------------------------
# 3. Change subscriptions with 4 concurrent HTTP writers
# ---------------------------------------------------------------------------------------
def test_cdc_exactly_once(srv):
    srv.post("/db/main/execute", {"sql": "CREATE TABLE ev (id INTEGER PRIMARY KEY, tx TEXT, pos INTEGER, size INTEGER)"})
    sub = Conn(connect(srv))
    r = sub.request({"type": "subscribe", "id": "feed", "table": "ev"})
    check(r.get("type") == "subscribed" and r.get("seq") is not None and r.get("epoch"),
          "subscribed with seq and epoch: %s" % r)
    total, writers = 10000, 4
    per = total // writers
    committed = []
    lock = threading.Lock()
    errors = []

    def writer(w):
        rnd = random.Random(w)
        done, n = 0, 0
        while done < per:
            size = min(rnd.randint(1, 50), per - done)
            tag = "w%d-%d" % (w, n)
            stmts = [{"sql": "INSERT INTO ev (tx, pos, size) VALUES (?, ?, ?)", "params": [tag, k, size]}
                     for k in range(size)]
            st, b, _ = srv.post("/db/main/transaction", {"statements": stmts})
            if st != 200:
                errors.append((st, b))
                return
            with lock:
                committed.append((tag, size))
            done += size
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    t0 = time.time()
    for t in threads:
        t.start()
    events = []
    deadline = time.time() + 120
    while len(events) < total and time.time() < deadline:
        try:
            m = sub.take(lambda m: m.get("type") == "change" and m.get("id") == "feed", 30, "change")
        except TimeoutError:
            break
        events.append(m["event"])
    for t in threads:
        t.join(60)
    check(not errors, "writers succeeded: %s" % errors[:3])
    check(len(events) == total, "received %d of %d changes" % (len(events), total))
    seqs = [int(e["seq"]) for e in events]
    check(all(a < b for a, b in zip(seqs, seqs[1:])), "seq strictly increasing")
    ids = [e["row"]["id"] for e in events]
    check(len(set(ids)) == len(ids), "every row exactly once")
    check(all(e["type"] == "insert" and e["table"] == "ev" for e in events), "inserts on ev")
    # transactions: contiguous, txEnd exactly on the last change of each
    sizes = dict(committed)
    groups, bad = [], 0
    for e in events:
        tag = e["row"]["tx"]
        if not groups or groups[-1][0] != tag:
            groups.append([tag, []])
        groups[-1][1].append(e)
    for tag, evs in groups:
        ends = [bool(e.get("txEnd")) for e in evs]
        if len(evs) != sizes.get(tag) or ends != [False] * (len(evs) - 1) + [True] \
                or [e["row"]["pos"] for e in evs] != list(range(len(evs))) \
                or len({e.get("txId") for e in evs}) != 1:
            bad += 1
    check(len(groups) == len(committed), "one contiguous run per transaction: %d runs, %d transactions"
          % (len(groups), len(committed)))
    check(bad == 0, "%d transactions without exactly one txEnd on their last change" % bad)
    print("cdc: %d changes in %d transactions over %.1fs" % (len(events), len(committed), time.time() - t0))

    # resume: a client that disconnects and resubscribes with sinceSeq gets exactly what it missed
    last_seq, epoch = seqs[-1], r.get("epoch")
    sub.close()
    missed = []
    for i in range(37):
        st, b, _ = srv.post("/db/main/execute", {"sql": "INSERT INTO ev (tx, pos, size) VALUES ('missed', ?, 1)",
                                                 "params": [i]})
        missed.append(b["lastInsertRowId"])
    again = Conn(connect(srv))
    r2 = again.request({"type": "subscribe", "id": "feed", "table": "ev", "sinceSeq": str(last_seq),
                        "epoch": epoch})
    check(r2.get("type") == "subscribed" and not r2.get("resync"), "resumed without resync: %s" % r2)
    got = []
    while len(got) < len(missed):
        try:
            m = again.take(lambda m: m.get("type") == "change", 15, "replayed change")
        except TimeoutError:
            break
        got.append(m["event"])
    check([e["row"]["id"] for e in got] == missed, "replay is exactly the missed rows in order")
    check(all(int(e["seq"]) > last_seq for e in got), "replayed seqs are above the cursor")
    srv.post("/db/main/execute", {"sql": "INSERT INTO ev (tx, pos, size) VALUES ('live', 0, 1)"})
    m = again.take(lambda m: m.get("type") == "change", 15, "live change after replay")
    check(m["event"]["row"]["tx"] == "live" and m["event"].get("txEnd") is True,
          "then live, marked txEnd: %s" % m)
    try:
        extra = again.take(lambda m: m.get("type") == "change", 0.5, "extra")
        check(False, "no duplicate after the replay: %s" % extra)
    except TimeoutError:
        pass
    # a cursor from another sequence space forces a resync
    r3 = again.request({"type": "subscribe", "id": "foreign", "table": "ev", "sinceSeq": "5",
                        "epoch": "some-other-file"})
    check(r3.get("type") == "subscribed" and r3.get("resync") is True, "foreign epoch resyncs: %s" % r3)
    r4 = again.request({"type": "subscribe", "id": "foreign", "table": "ev"})
    check(err_of(r4) == "DUPLICATE_SUBSCRIPTION", "duplicate id: %s" % r4)
    r5 = again.request({"type": "unsubscribe", "id": "foreign"})
    check(r5.get("type") == "unsubscribed", "unsubscribed: %s" % r5)
    again.close()


# ---------------------------------------------------------------------------------------
# 4. Live queries
# ---------------------------------------------------------------------------------------
def test_live(srv):
    st, caps, _ = srv.request("GET", "/capabilities")
    digest = ((caps or {}).get("registry") or {}).get("digest")
    check(digest, "the registry digest is announced: %s" % caps)
    c = Conn(connect(srv))
    c.request({"type": "execute", "id": "seed", "sql": "INSERT INTO items (owner, qty) VALUES ('zed', 10)"})
    r = c.request({"type": "subscribe", "id": "lq", "name": "byOwner", "args": {"owner": "zed"},
                   "registryDigest": digest})
    check(r.get("type") == "subscribed" and [x["qty"] for x in r.get("rows", [])] == [10],
          "live subscribed with rows: %s" % r)
    held = list(r.get("rows", []))

    def apply(msg):
        nonlocal held
        if "rows" in msg:
            held = msg["rows"]
        for op in msg.get("ops", []):
            if op["op"] == "insert":
                held.insert(op["index"], op["row"])
            elif op["op"] == "update":
                held[op["index"]] = op["row"]
            else:
                del held[op["index"]]

    def until(pred, what):
        deadline = time.time() + 15
        while time.time() < deadline:
            if pred():
                return True
            try:
                m = c.take(lambda m: m.get("type") == "live" and m.get("id") == "lq", 5, what)
            except TimeoutError:
                continue
            apply(m)
        return pred()

    c.request({"type": "execute", "id": "i1", "sql": "INSERT INTO items (owner, qty) VALUES ('zed', 11)"})
    check(until(lambda: [x["qty"] for x in held] == [10, 11], "insert op"), "insert reaches the live rows: %s" % held)
    c.request({"type": "execute", "id": "u1", "sql": "UPDATE items SET qty = 12 WHERE owner = 'zed' AND qty = 10"})
    check(until(lambda: [x["qty"] for x in held] == [12, 11], "update op"), "update reaches the live rows: %s" % held)
    c.request({"type": "execute", "id": "d1", "sql": "DELETE FROM items WHERE owner = 'zed' AND qty = 11"})
    check(until(lambda: [x["qty"] for x in held] == [12], "delete op"), "delete reaches the live rows: %s" % held)
    c.request({"type": "execute", "id": "o1", "sql": "INSERT INTO items (owner, qty) VALUES ('other', 1)"})
    st, b, _ = srv.post("/db/main/query", {"sql": "SELECT id, owner, qty FROM items WHERE owner = 'zed' ORDER BY id"})
    check(until(lambda: held == b["rows"], "final rows"), "live rows equal a fresh read: %s vs %s" % (held, b))
    r = c.request({"type": "subscribe", "id": "bad", "name": "byOwner", "args": {"owner": "zed"},
                   "registryDigest": "0" * 64})
    check(err_of(r) == "REGISTRY_MISMATCH", "REGISTRY_MISMATCH: %s" % r)
    r = c.request({"type": "subscribe", "id": "agg", "name": "ownerCounts"})
    check(err_of(r) == "CDC_ERROR", "an aggregate read is refused: %s" % r)
    r = c.request({"type": "subscribe", "id": "tbl", "name": "byOwner", "args": {"owner": "zed"}, "table": "items"})
    check(err_of(r) == "INVALID_MESSAGE", "a live query with a CDC field: %s" % r)
    r = c.request({"type": "unsubscribe", "id": "lq"})
    check(r.get("type") == "unsubscribed", "live unsubscribed: %s" % r)
    c.close()


# ---------------------------------------------------------------------------------------
# 5. Backpressure: a subscriber that stops reading is closed with 4290
# ---------------------------------------------------------------------------------------
def test_backpressure():
    server = "  max_body_bytes: 65536\n  max_ws_backpressure_bytes: 262144\n"
    with WSServer(extra_plugins=WS_PLUGIN, extra_server=server) as srv:
        srv.post("/db/main/execute", {"sql": "CREATE TABLE blob (id INTEGER PRIMARY KEY, pad TEXT)"})
        ws = connect(srv)
        ws.send_json({"type": "subscribe", "id": "slow", "table": "blob"})
        first = ws.recv_json(10)
        check(first.get("type") == "subscribed", "subscribed: %s" % first)
        pad = "p" * 4000
        inserted = 0
        t_end = time.time() + 60
        # pour writes in while the subscriber reads nothing
        # (the kernel's socket buffers hold a few MB before the server's queue grows: pour
        # up to 40 MB, stopping early once the access log shows the close)
        while inserted < 10000 and time.time() < t_end:
            st, b, _ = srv.post("/db/main/batch", {"sql": "INSERT INTO blob (pad) VALUES (?)",
                                                   "paramsBatch": [[pad]] * 10})
            check(st == 200, "batch insert: %s %s" % (st, b))
            inserted += 10
            if inserted % 500 == 0 and " closed 4290 " in srv.read_log():
                break
        # now read: a gap-free prefix of changes, then the close
        ids, code, reason = [], None, None
        deadline = time.time() + 60
        try:
            while time.time() < deadline:
                m = ws.recv_json(max(0.01, deadline - time.time()))
                if m.get("type") == "change":
                    ids.append(m["event"]["row"]["id"])
        except Closed as e:
            code, reason = e.code, e.reason
        except TimeoutError:
            pass
        check(code == 4290, "a subscriber past the outbound bound is closed with 4290: %s %r" % (code, reason))
        check(ids == list(range(1, len(ids) + 1)), "the changes before the close have no gap (%d)" % len(ids))
        check(len(ids) < inserted, "the close came before every change was delivered (%d < %d)"
              % (len(ids), inserted))
        # the server keeps serving
        c = Conn(connect(srv))
        r = c.request({"type": "query", "id": "ok", "sql": "SELECT count(*) AS n FROM blob"})
        check(r.get("data", {}).get("rows", [{}])[0].get("n") == inserted, "still serving: %s" % r)
        c.close()


# ---------------------------------------------------------------------------------------
# 6. Authentication at the upgrade: 4401 / 4403, identity for registered operations
# ---------------------------------------------------------------------------------------
def test_auth():
    plugins = WS_PLUGIN + """
  - name: tokens
    plugin: auth_token
    kind: hook
    config:
      tokens:
        - { token: app-token, name: alice, databases: [main], claims: { owner: alice } }
"""
    server = """
  operations:
    - { database: main, name: mine, kind: read, from_identity: { owner: owner },
        sql: "SELECT :owner AS owner" }
"""
    with WSServer(extra_plugins=plugins, extra_server=server,
                extra_databases="  - { id: other, path: other.db }\n") as srv:
        ws = connect(srv)
        code, reason = expect_close(ws)
        check(code == 4401 and (reason or "").startswith("UNAUTHORIZED: "), "no token: 4401 %s %r" % (code, reason))
        check(len((reason or "").encode()) <= 123, "reason fits a close frame")
        ws = connect(srv, path="/db/other", headers={"Authorization": "Bearer app-token"})
        code, reason = expect_close(ws)
        check(code == 4403 and (reason or "").startswith("FORBIDDEN: "), "wrong database: 4403 %s %r" % (code, reason))
        c = Conn(connect(srv, headers={"Authorization": "Bearer app-token"}))
        r = c.request({"type": "query", "id": "m", "name": "mine"})
        check(r.get("data") == {"rows": [{"owner": "alice"}]}, "identity from the upgrade: %s" % r)
        c.close()


# ---------------------------------------------------------------------------------------
# 7. SQL not accepted
# ---------------------------------------------------------------------------------------
def test_sql_not_accepted():
    with WSServer(extra_plugins=WS_PLUGIN, accept_sql=False) as srv:
        c = Conn(connect(srv))
        for t, extra in (("query", {"sql": "SELECT 1"}), ("execute", {"sql": "SELECT 1"}),
                         ("transaction", {"statements": [{"sql": "SELECT 1"}]}),
                         ("batch", {"sql": "x", "paramsBatch": [[1]]}),
                         ("load", {"sql": "x", "paramsBatch": [[1]]})):
            msg = {"type": t, "id": t}
            msg.update(extra)
            r = c.request(msg)
            check(err_of(r) == "SQL_NOT_ACCEPTED", "%s refused: %s" % (t, r))
        c.close()


# ---------------------------------------------------------------------------------------
# 8. SIGTERM closes open sessions with 1013
# ---------------------------------------------------------------------------------------
def test_sigterm():
    srv = WSServer(extra_plugins=WS_PLUGIN)
    try:
        srv.start()
        srv.post("/db/main/execute", {"sql": "CREATE TABLE t (x)"})
        a = connect(srv)
        b = Conn(connect(srv))
        b.request({"type": "subscribe", "id": "s", "table": "t"})
        srv.signal(signal.SIGTERM)
        ca, ra = expect_close(a, 15)
        cb, rb = expect_close(b.ws, 15)
        check(ca == 1013 and cb == 1013, "SIGTERM closes sessions with 1013: %s %s (%r)" % (ca, cb, ra))
        try:
            srv.proc.wait(timeout=20)
        except Exception:
            pass
        check(srv.proc.poll() == 0, "the server exits cleanly: %s" % srv.proc.poll())
    finally:
        srv.stop()
        srv.cleanup()


def main():
    with WSServer(extra_plugins=WS_PLUGIN, extra_server=OPERATIONS + "  max_body_bytes: 65536\n") as srv:
        test_upgrade(srv)
        test_messages(srv)
        test_cdc_exactly_once(srv)
        test_live(srv)
    test_backpressure()
    test_auth()
    test_sql_not_accepted()
    test_sigterm()
    finish()


if __name__ == "__main__":
    main()
