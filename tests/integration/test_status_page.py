"""The live status page (server.status_page: GET /status and GET /status.json) in headless
Chromium against a real three-node static cluster replicating over the tcp transport with
mutual TLS on loopback.

Every node serves the page behind the auth_token hook. Chromium (Debian's chromium package)
runs headless with its remote-debugging port; the test drives it over the DevTools protocol
with the standard library only (tests/integration/wsclient.py): it adds the Authorization
header to every request of the page (Network.setExtraHTTPHeaders), opens /status, waits
(bounded) until the page has drawn the peers of the cluster from two successive status.json
answers, and records every console message, uncaught exception and browser log entry of level
error. It checks:
  - the page loads and refreshes itself without any console error or uncaught exception;
  - the primary's page shows node-b and node-c connected and in sync, the replicas' pages show
    node-a as their primary; the node id, role, version and per-route request counts appear;
  - a database whose id is markup (<img onerror=...>) shows as text and injects nothing;
  - after a replica stops, the primary's page shows it disconnected on a later refresh;
  - /status and /status.json without the token answer 401 like the data routes; with
    server.status_page off both answer 404 exactly like an unknown path; /metrics stays 404
    (metrics off) although the page keeps request counters;
  - the page holds no http(s):// URL and its Content-Security-Policy allows only this origin.

If Chromium is missing or cannot start, the test fails and prints why. Every wait is bounded."""
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

from gslib import Server, check, error_code, finish
from static_cluster import StaticCluster, sql as cluster_sql, wait_until
from wsclient import WSClient

CHROMIUM = os.environ.get("GS_CHROMIUM") or shutil.which("chromium") or \
    shutil.which("chromium-browser") or ""
TOKEN = "status-page-token-1"
AUTH = {"Authorization": "Bearer " + TOKEN}
HOSTILE_DB = "<img src=x onerror=console.error('injected')>"

cluster = StaticCluster(
    "tcp", "node-a", ["node-b", "node-c"], prefix="gs-status-it-", certs_from="static-tcp",
    cert_names=["node-a", "node-b", "node-c"],
    transport_options="heartbeat_ms: 300\nreconnect_min_ms: 50\nreconnect_max_ms: 500",
    plugins="""- name: tokens
  plugin: auth_token
  kind: hook
  config:
    tokens:
      - { token: %s, name: operator, databases: ["*"] }""" % TOKEN,
    server="status_page: true",
    replication="database: main\nwrite_forwarding: true")
work = cluster.work


def start_node(node_id):
    """node_id started; the primary also serves a database whose id is markup."""
    more = "  - id: %s\n    path: hostile.db" % json.dumps(HOSTILE_DB) \
        if node_id == cluster.primary else ""
    return cluster.start(node_id, databases=more)


def sql(srv, statement, params=None):
    return cluster_sql(srv, statement, params, headers=AUTH, timeout=30.0)


def status_json(srv):
    st, body, _ = srv.request("GET", "/status.json", headers=AUTH, timeout=10)
    return body if st == 200 else None


# ---- a DevTools-protocol session over the stdlib WebSocket client ----

class Browser:
    """Headless Chromium with a remote-debugging port; one page session."""

    def __init__(self, tmp):
        self.profile = os.path.join(tmp, "chromium-profile")
        self.log_path = os.path.join(tmp, "chromium.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-background-networking", "--disable-sync",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--user-data-dir=" + self.profile, "--enable-logging=stderr", "--v=0",
             "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.time() + 60
        self.port = None
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    self.port = int(first)
                    break
            except OSError:
                pass
            time.sleep(0.1)
        if not self.port:
            raise RuntimeError("chromium did not open its debugging port (exit %s):\n%s" %
                               (self.proc.poll(), self.read_log()[-3000:]))
        targets = None
        deadline = time.time() + 20
        while time.time() < deadline:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % self.port,
                                        timeout=5) as r:
                targets = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if targets:
                break
            time.sleep(0.1)
        if not targets:
            raise RuntimeError("chromium shows no page target")
        path = "/devtools/page/" + targets[0]["id"]
        self.ws = WSClient.connect("127.0.0.1", self.port, path, timeout=10)
        self.next_id = 0
        self.events = []

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def call(self, method, params=None, timeout=20.0):
        self.next_id += 1
        mid = self.next_id
        self.ws.send_json({"id": mid, "method": method, "params": params or {}})
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("DevTools %s: no answer within %.0f s" % (method, timeout))
            msg = self.ws.recv_json(timeout=left)
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError("DevTools %s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in r:
            raise RuntimeError("evaluate %s: %s" % (expression, r["exceptionDetails"]))
        return r.get("result", {}).get("value")

    def problems(self):
        """Console errors, uncaught exceptions and error log entries seen so far."""
        out = []
        for ev in self.events:
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append("uncaught: %s %s" % (d.get("text"),
                                               d.get("exception", {}).get("description")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p.get("type"), [a.get("value", a.get(
                    "description")) for a in p.get("args", [])]))
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                e = p["entry"]
                out.append("log %s: %s %s" % (e.get("source"), e.get("text"), e.get("url", "")))
        return out

    def status_json_answers(self):
        return sum(1 for ev in self.events if ev["method"] == "Network.responseReceived" and
                   ev["params"]["response"]["url"].endswith("/status.json") and
                   ev["params"]["response"]["status"] == 200)

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing anyway
            pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


PEERS_JS = """JSON.stringify(Array.from(document.querySelectorAll('table.peers tr[data-peer]'))
  .map(function (tr) { return Array.from(tr.children).map(function (td) {
    return td.textContent; }); }))"""


def page_peers(browser):
    return json.loads(browser.evaluate(PEERS_JS) or "[]")


def open_status(browser, srv):
    """Navigate to srv's page; wait (bounded) until it drew at least two answers."""
    browser.events = []
    browser.call("Page.navigate", {"url": "http://127.0.0.1:%d/status" % srv.port})

    def drawn():
        browser.evaluate("1")  # collects the events that arrived meanwhile
        return browser.status_json_answers() >= 2 and page_peers(browser)
    return wait_until("the page of %s to draw twice" % srv.port, drawn, timeout=30, every=0.3)


browser = None
t0 = time.time()
try:
    a = start_node("node-a")
    st, body, _ = sql(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    check(st == 200, "create table: %s %s" % (st, body))
    for i in range(1, 51):
        sql(a, "INSERT INTO t (id, v) VALUES (?, ?)", [i, "v%d" % i])
    b = start_node("node-b")
    c = start_node("node-c")

    def cluster_ready():
        doc = status_json(a)
        if not doc:
            return None
        main = [d for d in doc["databases"] if d["id"] == "main"][0]
        peers = main["replication"]["peers"]
        ok = len(peers) == 2 and all(p["connected"] and p["inSync"] for p in peers)
        return doc if ok else None
    doc = wait_until("node-b and node-c in sync on node-a", cluster_ready, timeout=60)
    check(doc is not None, "node-a sees node-b and node-c connected and in sync")

    # --- status.json itself ---
    if doc:
        check(doc["node"]["id"] == "node-a" and doc["node"]["role"] == "primary",
              "node object: %s" % doc["node"])
        ids = sorted(d["id"] for d in doc["databases"])
        check(ids == sorted(["main", HOSTILE_DB]), "databases listed: %s" % ids)
        main = [d for d in doc["databases"] if d["id"] == "main"][0]
        check(main["log"]["lastSeq"] >= 51 and main["log"]["rows"] >= 51,
              "change log size: %s" % main["log"])
        check(doc["requests"] and doc["requests"]["total"] > 0, "request counters present")
    rdoc = status_json(b)
    check(rdoc is not None and rdoc["node"]["role"] == "replica" and
          rdoc["databases"][0]["replication"]["peers"][0]["id"] == "node-a",
          "node-b's status.json shows node-a: %s" % (rdoc and rdoc["databases"]))

    # --- the same authentication as the data routes ---
    for path in ("/status", "/status.json"):
        st, body, _ = a.request("GET", path, timeout=10)
        check(st == 401 and error_code(body) == "UNAUTHORIZED",
              "%s without the token: %s %s" % (path, st, body))
        st, body, _ = a.request("GET", path, headers={"Authorization": "Bearer wrong"},
                                timeout=10)
        check(st == 401, "%s with a wrong token: %s" % (path, st))
    st2, _, _ = a.request("POST", "/db/main/query", {"sql": "SELECT 1"}, timeout=10)
    check(st2 == 401, "a data route without the token is 401 too (%s)" % st2)
    st, body, _ = a.request("GET", "/metrics", headers=AUTH, timeout=10)
    check(st == 404, "/metrics stays off (server.metrics off): %s" % st)

    # --- the page: self-contained, same-origin only ---
    st, page, hs = a.request("GET", "/status", headers=AUTH, timeout=10, raw=True)
    check(st == 200 and hs.get("content-type") == "text/html; charset=utf-8",
          "GET /status: %s %s" % (st, hs.get("content-type")))
    text = page.decode("utf-8")
    urls = re.findall(r"https?://[^\s\"'<>)]*", text)
    origin = "http://127.0.0.1:%d" % a.port
    check(all(u.startswith(origin) for u in urls), "the page names no other origin: %s" % urls)
    check(not re.search(r"<(script|link|img|iframe)[^>]*\ssrc=", text),
          "the page loads no resource")
    csp = hs.get("content-security-policy", "")
    check("connect-src 'self'" in csp and "default-src 'none'" in csp, "CSP: %s" % csp)

    # --- headless Chromium ---
    if not CHROMIUM:
        check(False, "chromium is not installed (apt-get install chromium)")
    else:
        try:
            browser = Browser(work)
        except Exception as e:  # noqa: BLE001 - report the exact reason
            check(False, "chromium cannot run here: %s" % e)
            browser = None
    if browser:
        for domain in ("Runtime", "Log", "Page", "Network"):
            browser.call(domain + ".enable")
        browser.call("Network.setExtraHTTPHeaders", {"headers": AUTH})

        rows = open_status(browser, a)
        check(rows is not None, "node-a's page drew its peers from two answers")
        rows = page_peers(browser)
        by_id = {r[0]: r for r in rows}
        # columns: peer, role, connected, in sync, last acked seq, lag, lag time, in flight, for
        for peer in ("node-b", "node-c"):
            r = by_id.get(peer)
            check(r is not None and r[1] == "replica" and r[2] == "yes" and r[3] == "yes",
                  "node-a's page shows %s connected and in sync: %s" % (peer, r))
        dom = browser.evaluate("document.documentElement.outerHTML") or ""
        body_text = browser.evaluate("document.body.innerText") or ""
        check(browser.evaluate("document.getElementById('node-id').textContent") == "node-a",
              "the page shows the node id")
        check(browser.evaluate("document.getElementById('node-role').textContent") == "primary",
              "the page shows the role")
        check(browser.evaluate("document.getElementById('node-version').textContent") ==
              doc["node"]["version"] if doc else False, "the page shows the version")
        check("/db/{id}/execute" in body_text and "/status.json" in body_text,
              "the page lists per-route request counts")
        check(browser.evaluate("document.querySelectorAll('img').length") == 0 and
              ("database " + HOSTILE_DB) in body_text,
              "a database id made of markup shows as text and injects nothing")
        check("unreachable" not in body_text, "the page never lost the server")
        rate = browser.evaluate("document.getElementById('req-rate').textContent")
        check(rate is not None and re.match(r"^\d+(\.\d)?$", rate or ""),
              "a request rate is computed between two answers: %r" % rate)

        # a replica's page shows its primary
        rows_b = open_status(browser, b)
        check(rows_b is not None and rows_b[0][0] == "node-a" and rows_b[0][1] == "primary"
              and rows_b[0][2] == "yes", "node-b's page shows node-a as its connected primary")

        # a replica stops: a later refresh of node-a's page shows it disconnected
        open_status(browser, a)
        code = cluster.stop(c)
        check(code == 0, "node-c stopped: %s" % code)

        def c_down():
            browser.evaluate("1")
            r = {x[0]: x for x in page_peers(browser)}.get("node-c")
            return r if r and r[2] == "no" and r[3] == "no" else None
        check(wait_until("node-a's page to show node-c down", c_down, timeout=30, every=0.3),
              "node-a's page shows node-c disconnected after it stopped")

        problems = browser.problems()
        check(not problems, "no console error or uncaught exception: %s" % problems)
        if "DevTools" not in browser.read_log():
            print("note: chromium's log has no DevTools line", flush=True)
        print("status page: %d DevTools events, dom %d bytes, %.1f s" %
              (len(browser.events), len(dom), time.time() - t0), flush=True)

    # --- server.status_page off: 404 like an unknown path ---
    with Server(extra_server="  status_page: false") as off:
        st0, body0, _ = off.request("GET", "/no-such-route", timeout=10)
        for path in ("/status", "/status.json"):
            st, body, _ = off.request("GET", path, timeout=10)
            check(st == 404 and st0 == 404 and body == body0,
                  "%s with the page off: %s %s (unknown path: %s %s)" %
                  (path, st, body, st0, body0))
    with Server() as default:
        st, _, _ = default.request("GET", "/status", timeout=10)
        check(st == 404, "the page is off by default: %s" % st)
finally:
    if browser:
        browser.close()
    cluster.close()

finish()
