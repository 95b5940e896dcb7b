#!/usr/bin/env python3
"""The plugin SDK end to end: install, build a plugin out of tree, load it, see it work.

1. `cmake --install BUILD --prefix P` into a temporary prefix: headers and
   gatestream-plugin.pc must land there.
2. Copy plugins/example (example.c and its Makefile only) to a folder outside the tree and
   build it with `make`, finding the SDK through PKG_CONFIG_PATH alone. The in-tree copy of
   gs_hook_example.so is removed from the prefix, so only the out-of-tree build can serve.
3. `P/bin/gatestream --describe-plugin example` finds it through GS_PLUGIN_DIR.
4. Start the installed gatestream with the http transport and the example hook loaded by
   `path:` on a free loopback port, and check the hook over HTTP: deny_words refuses a
   statement (403 HOOK_DENIED) while others run; then a second server whose allow list
   leaves out 127.0.0.1 refuses /db routes (403 FORBIDDEN) but still answers /health.
Each server is stopped by its pid (SIGTERM, bounded wait, then SIGKILL).

Usage: test_sdk.py BUILD_DIR [--cmake CMAKE]   (or GS_BUILD_DIR in the environment)
Prints failures and a final "N passed, M failed"; exits 1 on any failure.
"""
import argparse
import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gslib  # noqa: E402  (the shared integration helpers next to this file)
from gslib import check, error_code  # noqa: E402

SOURCE_DIR = os.path.abspath(os.path.join(HERE, "..", ".."))
STEP_TIMEOUT_S = 240  # install or make; bounded like every wait here
FAILED_BEFORE = [0]  # gslib.FAILED when a server started: print its log if it grew


def run(cmd, env=None, cwd=None):
    """(returncode, combined output); a hang past STEP_TIMEOUT_S counts as failure."""
    try:
        p = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=STEP_TIMEOUT_S)
        return p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        return -1, "timed out after %d s: %s" % (STEP_TIMEOUT_S, e)


def ask(server, method, path, body=None):
    """server.request, with a dropped connection or timeout recorded as status None."""
    try:
        return server.request(method, path, body)
    except (OSError, http.client.HTTPException) as e:
        return None, "%s: %s" % (type(e).__name__, e), {}


def hook_yaml(so_path, allow, deny):
    """The example hook's plugin entry, in the shape of gslib's extra_plugins."""
    return (
        "  - name: guard\n"
        "    plugin: example\n"
        "    kind: hook\n"
        "    path: '%s'\n"
        "    config:\n"
        "      allow: [%s]\n"
        "      deny_words: [%s]\n" % (so_path, ", ".join('"%s"' % a for a in allow),
                                      ", ".join(deny)))


def serve(so_path, allow, deny, checks):
    """Start the installed gatestream with the hook, run checks(server), stop it."""
    server = gslib.Server(extra_plugins=hook_yaml(so_path, allow, deny))
    FAILED_BEFORE[0] = gslib.FAILED
    try:
        try:
            server.start(timeout=10.0)
        except RuntimeError as e:
            check(False, "gatestream with the out-of-tree hook starts: %s" % e)
            return
        check(True, "started")
        checks(server)
        status, seconds = server.stop(timeout=10.0)
        check(status == 0, "SIGTERM stops gatestream with status 0 (got %s after %.1f s)"
              % (status, seconds))
        if FAILED_BEFORE[0] != gslib.FAILED:
            print("server log (last 3000 bytes):\n" + server.read_log()[-3000:], flush=True)
    finally:
        server.cleanup()


def checks_deny_words(server):
    st, body, _ = ask(server, "GET", "/health")
    check(st == 200, "GET /health is 200 (got %s %s)" % (st, body))
    # First, before any table exists: the hook refuses the statement before SQLite sees it
    # (a statement that ran would fail with QUERY_ERROR, no such table).
    st, body, _ = ask(server, "POST", "/db/main/execute", {"sql": "DROP TABLE t"})
    check(st == 403 and error_code(body) == "HOOK_DENIED",
          "DROP TABLE is refused 403 HOOK_DENIED by deny_words (got %s %s)" % (st, body))
    msg = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
    check("drop" in msg, "the refusal names the word (got %r)" % msg)
    st, body, _ = ask(server, "POST", "/db/main/execute", {"sql": "CREATE TABLE t (x TEXT)"})
    check(st == 200, "CREATE TABLE passes the hook (got %s %s)" % (st, body))
    st, body, _ = ask(server, "POST", "/db/main/execute",
                      {"sql": "INSERT INTO t VALUES (?)", "params": ["drop me"]})
    check(st == 200, "INSERT passes the hook (got %s %s)" % (st, body))
    st, body, _ = ask(server, "POST", "/db/main/query", {"sql": "SELECT x, 'drop' AS w FROM t"})
    check(st == 200 and isinstance(body, dict)
          and body.get("rows") == [{"x": "drop me", "w": "drop"}],
          "a denied word inside a string literal passes (got %s %s)" % (st, body))
    st, body, _ = ask(server, "POST", "/db/main/execute", {"sql": "drop table t"})
    check(st == 403 and error_code(body) == "HOOK_DENIED",
          "drop table (lower case) is refused too (got %s %s)" % (st, body))
    st, body, _ = ask(server, "POST", "/db/main/query", {"sql": "SELECT count(*) AS n FROM t"})
    check(st == 200 and isinstance(body, dict) and body.get("rows") == [{"n": 1}],
          "the table survived the refused DROP (got %s %s)" % (st, body))


def checks_allow_list(server):
    st, body, _ = ask(server, "GET", "/health")
    check(st == 200, "GET /health is 200 without the hook (got %s %s)" % (st, body))
    st, body, _ = ask(server, "POST", "/db/main/query", {"sql": "SELECT 1 AS one"})
    check(st == 403 and error_code(body) == "FORBIDDEN",
          "a /db route from 127.0.0.1 outside the allow list is 403 FORBIDDEN (got %s %s)"
          % (st, body))


def main():
    ap = argparse.ArgumentParser(description="plugin SDK end-to-end test")
    ap.add_argument("build_dir", nargs="?", default=os.environ.get("GS_BUILD_DIR", ""))
    ap.add_argument("--cmake", default="cmake")
    args = ap.parse_args()
    if not args.build_dir:
        print("usage: test_sdk.py BUILD_DIR (or set GS_BUILD_DIR)", file=sys.stderr)
        return 2
    build_dir = os.path.abspath(args.build_dir)
    work = tempfile.mkdtemp(prefix="gs-sdk-")
    try:
        # 1. Install into a temporary prefix.
        prefix = os.path.join(work, "prefix")
        rc, out = run([args.cmake, "--install", build_dir, "--prefix", prefix])
        check(rc == 0, "cmake --install succeeds:\n%s" % out[-3000:])
        if rc != 0:
            return gslib.finish()
        gatestream = os.path.join(prefix, "bin", "gatestream")
        check(os.access(gatestream, os.X_OK), "the prefix holds bin/gatestream")
        for h in ("abi.h", "host.h", "hook.h"):
            check(os.path.exists(os.path.join(prefix, "include", "gatestream", h)),
                  "the prefix holds include/gatestream/%s" % h)
        pcs = glob.glob(os.path.join(prefix, "**", "gatestream-plugin.pc"), recursive=True)
        check(len(pcs) == 1, "the prefix holds one gatestream-plugin.pc (found %s)" % pcs)
        if len(pcs) != 1:
            return gslib.finish()
        for stale in glob.glob(os.path.join(prefix, "**", "gs_hook_example.so"),
                               recursive=True):
            os.remove(stale)

        # 2. Build plugins/example out of tree with its Makefile and the SDK alone.
        src = os.path.join(work, "my-hook")
        os.makedirs(src)
        for f in ("example.c", "Makefile"):
            shutil.copy(os.path.join(SOURCE_DIR, "plugins", "example", f), src)
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = os.path.dirname(pcs[0])
        # The .pc derives its prefix from its own location (${pcfiledir}), so plain
        # pkg-config finds an install under any prefix.
        env.pop("CFLAGS", None)
        rc, out = run(["make"], env=env, cwd=src)
        so_path = os.path.join(src, "gs_hook_example.so")
        check(rc == 0 and os.path.exists(so_path),
              "make builds gs_hook_example.so out of tree:\n%s" % out[-3000:])
        if rc != 0:
            return gslib.finish()
        rc, out = run(["pkg-config", "--cflags", "gatestream-plugin"], env=env)
        incs = [os.path.realpath(f[2:]) for f in out.split() if f.startswith("-I")]
        check(rc == 0 and os.path.realpath(os.path.join(prefix, "include")) in incs,
              "pkg-config points at the installed headers (got %r)" % out)
        if shutil.which("nm"):
            rc, out = run(["nm", "-D", "--defined-only", so_path])
            syms = [line.split()[-1] for line in out.splitlines() if line.strip()]
            check(rc == 0 and syms == ["gs_plugin_entry"],
                  "the plugin exports gs_plugin_entry only (got %s)" % syms)

        # Run the installed binary; it finds the installed http transport next to itself.
        os.environ.pop("GS_PLUGIN_DIR", None)
        gslib.GATESTREAM = gatestream
        gslib.PLUGIN_DIR = ""

        # 3. --describe-plugin finds the out-of-tree build through GS_PLUGIN_DIR.
        denv = dict(os.environ)
        denv["GS_PLUGIN_DIR"] = src
        rc, out = run([gatestream, "--describe-plugin", "example"], env=denv)
        check(rc == 0 and "allow" in out and "deny_words" in out,
              "--describe-plugin example prints its keys (status %s):\n%s" % (rc, out))

        # 4. The hook at work over HTTP.
        serve(so_path, ["127.0.0.1", "::1"], ["drop"], checks_deny_words)
        serve(so_path, ["192.0.2.1"], [], checks_allow_list)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return gslib.finish()


if __name__ == "__main__":
    sys.exit(main())
