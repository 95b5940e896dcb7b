"""The client probe (client/tests/sub_probe.c, path in GS_CLIENT_SUB_PROBE) as a process whose
stdout lines a thread queues, for the etcd cluster tests of libgatestream-client
(test_client_migration_etcd, test_live_migration_etcd). Every wait is bounded."""
import os
import queue
import shutil
import subprocess
import threading
import time

import gslib
from etcd_cluster import NODE_IDS

PROBE = os.environ.get("GS_CLIENT_SUB_PROBE", "")


class Probe:
    """The probe started with args (its command line after the program); its stdout lines go
    to a queue read by a thread, its stdin takes commands (`route`, `rows`, `quit`)."""

    def __init__(self, args):
        self.proc = subprocess.Popen([PROBE] + list(args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        self.lines = queue.Queue()
        self.all = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, pred, timeout):
        """The first line (from now) for which pred(line) holds, or None after timeout s."""
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            self.all.append(line)
            if pred(line):
                return line

    def seen(self, pred):
        return [l for l in self.all if pred(l)]

    def command(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def quit(self, timeout=15):
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self):
        try:
            return self.proc.stderr.read() if self.proc.poll() is not None else ""
        except (OSError, ValueError):
            return ""


def node_of(cluster, url):
    """The id of the cluster node whose HTTP url this is, or None."""
    for n in NODE_IDS:
        if url.rstrip("/") == "http://127.0.0.1:%d" % cluster.http[n]:
            return n
    return None


def finish_run(probe, cluster, etcd, tmp):
    """End a run whatever happened: kill the probe, show the nodes' log tails when a check
    failed, stop and remove the nodes, stop etcd, remove tmp."""
    if probe is not None:
        probe.kill()
    if cluster:
        if gslib.FAILED:
            for n in NODE_IDS:
                print("---- %s log (tail) ----\n%s" % (n, cluster.log_tail(n, 2500)))
        cluster.stop_all()
        cluster.cleanup()
    etcd.stop()
    shutil.rmtree(tmp, ignore_errors=True)
