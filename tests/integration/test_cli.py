"""The command line: --version, --help, --check-config (good and bad files with file:line),
--describe-plugin, overrides, and refusing to start on a busy port."""
import os
import re
import socket
import subprocess
import tempfile

from gslib import GATESTREAM, PLUGIN_DIR, Server, check, finish

env = dict(os.environ, GS_PLUGIN_DIR=PLUGIN_DIR)


def run(*args, timeout=20):
    p = subprocess.run([GATESTREAM, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return p.returncode, p.stdout, p.stderr


rc, out, err = run("--version")
check(rc == 0 and out.startswith("gatestream "), "--version: %r" % out)
rc, out, err = run("--help")
check(rc == 0 and "--check-config" in out and "--describe-plugin" in out, "--help")
rc, out, err = run("--bogus")
check(rc == 2 and "see --help" in err, "unknown option: %r" % err)
rc, out, err = run()
check(rc == 2, "no arguments is a usage error")

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rc, out, err = run("--check-config", os.path.join(root, "config", "default.yaml"))
check(rc == 0 and "OK" in out, "default.yaml checks: %s %s" % (out, err))

tmp = tempfile.mkdtemp(prefix="gs-cli-")


def bad(text, *needles):
    path = os.path.join(tmp, "bad.yaml")
    with open(path, "w") as f:
        f.write(text)
    rc, out, err = run("--check-config", path)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc == 2 and len(lines) == 1 and all(n in err for n in needles),
          "bad config %r: rc=%s err=%r want %s" % (text[:40], rc, err, needles))


bad("server:\n  port: abc\n", "bad.yaml:2", "server.port")
bad("server:\n  port: 70000\n", "bad.yaml:2", "server.port")
bad("server:\n  prot: 1\n", "bad.yaml:2", "prot")
bad("nodes: {}\n", "bad.yaml:1", "nodes")
bad("databases:\n  - path: x.db\n", "bad.yaml:2", "id")
bad("databases:\n  - { id: a, synchronous: fast }\n", "bad.yaml:2", "synchronous")
bad("server: [\n", "bad.yaml")
bad("server:\n  host: ${GS_SURELY_UNSET_VARIABLE}\n", "bad.yaml:2", "GS_SURELY_UNSET_VARIABLE")
bad("plugins:\n  - { name: http, kind: hook }\n", "plugin 'http'", "Fix:")
bad("plugins:\n  - { name: nosuch, kind: hook }\n", "nosuch", "Fix:")
bad("plugins:\n  - { name: http, kind: client_transport, config: { nonsense: 1 } }\n", "nonsense", "bad.yaml:2")
bad("server:\n  transports: [nope]\n", "transports", "nope")
bad("server:\n  accept_backup_restore: true\n", "accept_backup_restore")

rc, out, err = run("--describe-plugin", "http")
check(rc == 0 and "client_transport" in out and "config keys" in out, "--describe-plugin http: %r %r" % (out[:200], err))
rc, out, err = run("--describe-plugin", "nosuchplugin")
check(rc == 2 and "Fix:" in err, "--describe-plugin unknown: %r" % err)

# overrides: --port and --data-dir
srv = Server()
port2 = srv.port
dd = os.path.join(srv.tmp, "elsewhere")
p = subprocess.Popen([GATESTREAM, "--config", os.path.join(root, "config", "default.yaml"),
                      "--port", str(port2), "--data-dir", dd, "--host", "127.0.0.1"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
ok = False
import time
deadline = time.time() + 15
while time.time() < deadline and not ok:
    try:
        st, b, _ = srv.request("GET", "/health", timeout=1)
        ok = st == 200
    except OSError:
        time.sleep(0.05)
check(ok, "--port override serves")
check(os.path.exists(os.path.join(dd, "main.db")), "--data-dir override holds main.db")
# a second server on the same port fails cleanly with status 1
rc, out, err = run("--config", os.path.join(root, "config", "default.yaml"), "--port", str(port2),
                   "--data-dir", os.path.join(srv.tmp, "other"))
check(rc == 1 and str(port2) in err, "busy port refused: rc=%s %r" % (rc, err[-300:]))
p.terminate()
p.wait(timeout=10)
check(p.returncode == 0, "override server stopped with 0")
srv.cleanup()

finish()
