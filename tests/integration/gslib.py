"""Helpers for integration tests: start a real gatestream process on a free loopback port
with a temporary data dir, talk HTTP to it, stop it by its pid. Every wait is bounded."""
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

GATESTREAM = os.environ.get("GS_BINARY", "")
PLUGIN_DIR = os.environ.get("GS_PLUGIN_DIR", "")

PASSED = 0
FAILED = 0


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def check(cond, what):
    """Record one assertion; print it when it fails."""
    global PASSED, FAILED
    if cond:
        PASSED += 1
    else:
        FAILED += 1
        print("FAIL: " + what, flush=True)


def finish():
    print("%d passed, %d failed" % (PASSED, FAILED), flush=True)
    sys.exit(1 if FAILED else 0)


DEFAULT_YAML = """
node: {{ id: test-node, data_dir: {data_dir} }}
log: {{ level: {log_level} }}
plugins:
  - name: http
    kind: client_transport
{extra_plugins}
server:
  host: 127.0.0.1
  port: {port}
  accept_sql: {accept_sql}
  access_log: true
{extra_server}
databases:
  - id: main
    path: main.db
{extra_databases}
"""


class Server:
    """A gatestream process. Use as a context manager."""

    def __init__(self, yaml_text=None, wrapper=None, accept_sql=True, extra_plugins="",
                 extra_server="", extra_databases="", log_level="info", data_dir=None,
                 port=None):
        self.tmp = tempfile.mkdtemp(prefix="gs-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.port = port or free_port()
        if yaml_text is None:
            yaml_text = DEFAULT_YAML.format(
                data_dir=self.data_dir, port=self.port,
                accept_sql="true" if accept_sql else "false",
                extra_plugins=extra_plugins, extra_server=extra_server,
                extra_databases=extra_databases, log_level=log_level)
        self.config = os.path.join(self.tmp, "gatestream.yaml")
        with open(self.config, "w") as f:
            f.write(yaml_text)
        self.wrapper = wrapper or []
        self.proc = None
        self.log_path = os.path.join(self.tmp, "server.log")

    def start(self, timeout=20.0):
        env = dict(os.environ)
        if PLUGIN_DIR:
            env["GS_PLUGIN_DIR"] = PLUGIN_DIR
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [GATESTREAM, "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gatestream exited with %s:\n%s" %
                                   (self.proc.returncode, self.read_log()))
            try:
                st, _, _ = self.request("GET", "/health", timeout=1.0)
                if st == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gatestream did not answer /health within %.0fs:\n%s" %
                           (timeout, self.read_log()))

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, headers=None, timeout=30.0, raw=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if body is not None and not isinstance(body, (bytes, str)):
                body = json.dumps(body)
            hdrs = {"Content-Type": "application/json"}
            hdrs.update(headers or {})
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            hs = {k.lower(): v for k, v in resp.getheaders()}
            if raw:
                return resp.status, data, hs
            try:
                parsed = json.loads(data) if data else None
            except ValueError:
                parsed = data
            return resp.status, parsed, hs
        finally:
            conn.close()

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        """SIGTERM and wait; returns (exit status, seconds taken)."""
        if not self.proc:
            return None, 0
        t0 = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode, time.time() - t0

    def kill9(self):
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()
        return False


def error_code(body):
    try:
        return body["error"]["code"]
    except (TypeError, KeyError):
        return None
