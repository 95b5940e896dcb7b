"""gatestream-cli, the SQL shell over libgatestream-client, against a real server: scripts
from stdin and -f (each output mode, .tables, .schema, .timer, multi-line and multi-statement
input, a trigger body with semicolons), exit status 1 at the first error with its code, the
GATESTREAM_TOKEN bearer token, the HTTP transport, .subscribe until SIGINT, and the
interactive prompt on a pseudo-terminal (continuation lines, Ctrl-C, history file).
Every wait is bounded."""
import json
import os
import pty
import select
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gslib import Server, check, finish  # noqa: E402

CLI = os.environ.get("GS_CLI", "")
WS = """
  - name: ws
    kind: client_transport
"""
TOKENS = WS + """
  - name: tokens
    plugin: auth_token
    kind: hook
    config:
      tokens:
        - { token: shell-token, name: ops, databases: [main] }
"""


def ready(srv, timeout=15.0):
    """The ws transport starts after http answers /health: wait for the node's ready line."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "' ready (gatestream" in srv.read_log():
            return
        time.sleep(0.02)
    raise RuntimeError("the node never logged ready:\n" + srv.read_log())


def shell(srv, script, *args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("GATESTREAM_TOKEN", None)
    e.update(env or {})
    p = subprocess.run([CLI, "--url", "http://127.0.0.1:%d" % srv.port, *args], input=script,
                       capture_output=True, text=True, timeout=timeout, env=e)
    return p.returncode, p.stdout, p.stderr


def test_modes(srv):
    rc, out, err = shell(srv, """
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, score REAL, pic BLOB);
INSERT INTO people (name, score, pic) VALUES ('ada', 9.5, x'CAFE'), ('bo, "b"', NULL, NULL);
SELECT id, name, score, pic
  FROM people
 ORDER BY id;
""")
    check(rc == 0, "script ran: %s %s" % (rc, err))
    check(out == "+----+---------+-------+---------+\n"
                "| id | name    | score | pic     |\n"
                "+----+---------+-------+---------+\n"
                "| 1  | ada     | 9.5   | X'CAFE' |\n"
                "| 2  | bo, \"b\" |       |         |\n"
                "+----+---------+-------+---------+\n", "table mode:\n%s" % out)
    rc, out, err = shell(srv, "SELECT id, name, score, pic FROM people ORDER BY id;\n",
                         "--mode", "json")
    rows = json.loads(out)
    check(rc == 0 and rows == [{"id": 1, "name": "ada", "score": 9.5,
                                "pic": {"__sirannon_blob": "CAFE"}},
                               {"id": 2, "name": 'bo, "b"', "score": None, "pic": None}],
          "json mode: %r" % out)
    rc, out, err = shell(srv, ".mode csv\nSELECT id, name, score FROM people ORDER BY id;\n")
    # (text mode reads the CSV CRLF line ends as \n)
    check(rc == 0 and out == 'id,name,score\n1,ada,9.5\n2,"bo, ""b""",\n',
          "csv mode: %r" % out)
    # several statements on a line, one without ';' at the end of the script, big integers
    rc, out, err = shell(srv, ".mode json\nSELECT 1 AS a; SELECT 2 AS b;\n"
                              "SELECT 9223372036854775807 AS big")
    lines = out.splitlines()
    check(rc == 0 and lines == ['[{"a":1}]', '[{"b":2}]',
                                '[{"big":{"__sirannon_int":"9223372036854775807"}}]'],
          "multi-statement line and a last statement without ';': %r" % out)
    # a trigger body holds semicolons; .changes prints write results
    rc, out, err = shell(srv, """
CREATE TABLE audit (n INTEGER);
CREATE TRIGGER people_ins AFTER INSERT ON people BEGIN
  INSERT INTO audit VALUES (1);
  INSERT INTO audit VALUES (2);
END;
.changes on
INSERT INTO people (name) VALUES ('cy');
.mode json
SELECT count(*) AS n FROM audit;
""")
    check(rc == 0 and "changes: 1   last_insert_rowid: 3" in out and '[{"n":2}]' in out,
          "trigger with a body, .changes: %s %s" % (out, err))
    rc, out, err = shell(srv, ".tables\n")
    check(rc == 0 and out.split() == ["audit", "people"], ".tables: %r" % out)
    rc, out, err = shell(srv, ".schema people\n")
    check(rc == 0 and out.startswith("CREATE TABLE people (id INTEGER PRIMARY KEY") and
          "CREATE TRIGGER people_ins" in out and "audit (n" not in out and "_sirannon" not in out,
          ".schema people: %r" % out)
    rc, out, err = shell(srv, ".schema\n")
    check(rc == 0 and "CREATE TABLE audit (n INTEGER);" in out and "CREATE TABLE people" in out,
          ".schema: %r" % out)
    rc, out, err = shell(srv, ".timer on\nSELECT 1;\n")
    check(rc == 0 and "Run Time: real " in out, ".timer: %r" % out)
    rc, out, err = shell(srv, ".help\n")
    check(rc == 0 and ".subscribe" in out and ".mode" in out, ".help")
    # -f FILE and the HTTP transport
    path = os.path.join(srv.tmp, "script.sql")
    with open(path, "w") as f:
        f.write("SELECT name FROM people WHERE id = 1;\n")
    rc, out, err = shell(srv, "", "-f", path, "--http", "--mode", "csv")
    check(rc == 0 and out == "name\nada\n", "-f over HTTP: %r %r" % (out, err))


def test_errors(srv):
    rc, out, err = shell(srv, "CREATE TABLE e (x);\nINSERT INTO e VALUES (1);\n"
                              "SELECT * FROM nowhere;\nINSERT INTO e VALUES (2);\n")
    check(rc == 1, "a script stops with status 1 at the first error: %s" % rc)
    check("Error: QUERY_ERROR: " in err and "nowhere" in err, "the error with its code: %r" % err)
    st, body, _ = srv.post("/db/main/query", {"sql": "SELECT count(*) AS n FROM e"})
    check(body == {"rows": [{"n": 1}]}, "nothing ran after the error: %s" % body)
    rc, out, err = shell(srv, "SELECT * FROM _sirannon_changes;\n")
    check(rc == 1 and "FORBIDDEN_SQL" in err, "server codes: %r" % err)
    rc, out, err = shell(srv, ".bogus\n")
    check(rc == 1 and "INVALID_ARGUMENT" in err, "unknown dot command: %r" % err)
    rc, out, err = shell(srv, ".mode xml\n")
    check(rc == 1, "bad mode")
    rc, out, err = shell(srv, "SELECT 1;\n", "--db", "nope")
    check(rc == 1 and "DATABASE_NOT_FOUND" in err, "unknown database: %r" % err)
    rc, out, err = shell(srv, "", "-f", "/nonexistent/file.sql")
    check(rc == 2 and "cannot open" in err, "missing -f file: %r" % err)
    p = subprocess.run([CLI, "--url", "http://127.0.0.1:1", "--http"], input="SELECT 1;\n",
                       capture_output=True, text=True, timeout=30)
    check(p.returncode == 1 and "CONNECTION_ERROR" in p.stderr, "no server: %r" % p.stderr)


def test_subscribe(srv):
    srv.post("/db/main/execute", {"sql": "CREATE TABLE feed (id INTEGER PRIMARY KEY, k TEXT)"})
    p = subprocess.Popen([CLI, "--url", "http://127.0.0.1:%d" % srv.port, "--mode", "json"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        p.stdin.write(".subscribe feed k='yes'\nSELECT count(*) AS n FROM feed;\n")
        p.stdin.close()
        line = read_line(p.stderr, 15)
        check("subscribed to feed" in line, "subscribed: %r" % line)
        srv.post("/db/main/execute", {"sql": "INSERT INTO feed (k) VALUES ('no'), ('yes')"})
        ev = read_line(p.stdout, 15)
        try:
            ev = json.loads(ev)
        except ValueError:
            ev = {}
        check(ev.get("type") == "insert" and ev.get("row") == {"id": 2, "k": "yes"} and
              ev.get("txEnd") is True, "a filtered change event: %r" % ev)
        p.send_signal(signal.SIGINT)
        rest = read_line(p.stdout, 15)
        check(rest.strip() == '[{"n":2}]', "Ctrl-C ends .subscribe; the script goes on: %r" % rest)
        check(p.wait(timeout=15) == 0, "exit status 0")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    rc, out, err = shell(srv, ".subscribe feed\n", "--http")
    check(rc == 1 and "TRANSPORT_ERROR" in err, ".subscribe over HTTP: %r" % err)


def read_line(stream, timeout):
    """One line from a pipe, or '' after timeout seconds."""
    r, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if r else ""


def test_token():
    with Server(extra_plugins=TOKENS) as srv:
        ready(srv)
        rc, out, err = shell(srv, "SELECT 1 AS one;\n")
        check(rc == 1 and "UNAUTHORIZED" in err, "no token: %r" % err)
        rc, out, err = shell(srv, ".mode json\nSELECT 1 AS one;\n",
                             env={"GATESTREAM_TOKEN": "shell-token"})
        check(rc == 0 and out.strip() == '[{"one":1}]', "with the token: %r %r" % (out, err))
        rc, out, err = shell(srv, "SELECT 1 AS one;\n", "--http",
                             env={"GATESTREAM_TOKEN": "shell-token"})
        check(rc == 0, "with the token over HTTP: %r" % err)


def test_interactive(srv):
    home = tempfile.mkdtemp(prefix="gs-cli-home-")
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["HOME"] = home
        os.environ.pop("GATESTREAM_TOKEN", None)
        os.execv(CLI, [CLI, "--url", "http://127.0.0.1:%d" % srv.port, "--mode", "json"])
    buf = b""

    def expect(needle, timeout=15):
        nonlocal buf
        deadline = time.time() + timeout
        while needle.encode() not in buf and time.time() < deadline:
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
            if r:
                try:
                    buf += os.read(fd, 4096)
                except OSError:
                    break
        found = needle.encode() in buf
        if found:
            buf = buf[buf.index(needle.encode()) + len(needle):]
        return found

    try:
        check(expect("gatestream> "), "prompt")
        os.write(fd, b"SELECT 40 +\r")
        check(expect("...> "), "continuation prompt for an unfinished statement")
        os.write(fd, b"2 AS answer;\r")
        check(expect('[{"answer":42}]'), "the statement ran")
        os.write(fd, b"SELECT 'never")
        # the line editor has the text (it echoed it) before Ctrl-C is typed
        check(expect("SELECT 'never"), "the typed text is echoed")
        os.write(fd, b"\x03")
        check(expect("^C"), "Ctrl-C clears the line")
        os.write(fd, b"SELECT 7 AS seven;\r")
        check(expect('[{"seven":7}]'), "the shell goes on after Ctrl-C")
        os.write(fd, b"SELECT * FROM nope;\r")
        check(expect("QUERY_ERROR"), "an error is printed")
        check(expect("gatestream> "), "and the shell goes on")
        os.write(fd, b".quit\r")
        _, status = os.waitpid(pid, 0)
        check(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, "exit 0 after .quit")
        hist = os.path.join(home, ".gatestream_history")
        text = open(hist).read() if os.path.exists(hist) else ""
        check("SELECT 7 AS seven;" in text, "history saved: %r" % text)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)


def main():
    if not CLI:
        print("GS_CLI is not set")
        sys.exit(1)
    with Server(extra_plugins=WS) as srv:
        ready(srv)
        test_modes(srv)
        test_errors(srv)
        test_subscribe(srv)
        test_interactive(srv)
    test_token()
    finish()


if __name__ == "__main__":
    main()
