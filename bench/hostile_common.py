"""Helpers shared by the hostile-client benchmarks (slow_clients.py, head_flood.py).

Servers run on CPU 0 (`taskset -c 0`) in their own session, so they are stopped by process
group; the benchmark process pins itself (and the load generators it starts) to CPU 1.
"""

import math
import os
import signal
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "bench", "apps")
VENV = os.path.join(ROOT, ".bench", "venv")
PY = os.path.join(VENV, "bin", "python")
SERVER = os.path.join(ROOT, "target", "release", "deployctl-server")
LOGS = os.path.join(ROOT, "target", "bench-logs")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pin_self_to_cpu1():
    """The load generators run on CPU 1, the server under test on CPU 0."""
    if os.cpu_count() and os.cpu_count() >= 2:
        os.sched_setaffinity(0, {1})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path="/", timeout=2.0):
    """One request on a fresh connection; the status code, or None on any failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n" % path).encode())
            head = b""
            while b"\r\n" not in head and len(head) < 4096:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            return int(head.split(b" ", 2)[1])
    except (OSError, ValueError, IndexError):
        return None


def start_server(name, argv, port, cwd=APPS):
    """Start `argv` on CPU 0 in its own session (stderr to target/bench-logs/); wait for a 200."""
    os.makedirs(LOGS, exist_ok=True)
    log_path = os.path.join(LOGS, "%s-%d.log" % ("".join(c if c.isalnum() else "_" for c in name), port))
    log = open(log_path, "wb")
    p = subprocess.Popen(
        ["taskset", "-c", "0"] + argv,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=cwd,
    )
    log.close()
    p.log_path = log_path
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if http_get(port, "/", timeout=1) == 200:
            return p
        if p.poll() is not None:
            break
        time.sleep(0.02)
    stop_server(p)
    raise RuntimeError("%s did not answer 200 (log: %s)" % (name, log_path))


def stop_server(p, grace=10):
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=grace)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()


def children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def rss_kib(pid):
    """VmRSS of `pid` in KiB (0 if it is gone)."""
    return _status_field(pid, "VmRSS:")


def hwm_kib(pid):
    """VmHWM (peak resident set) of `pid` in KiB."""
    return _status_field(pid, "VmHWM:")


def _status_field(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User + system CPU time of `pid` (all its threads)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


def cpu_jiffies(cpu):
    """(busy, total) clock ticks of one CPU since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]  # idle + iowait
                return sum(v[:8]) - idle, sum(v[:8])
    return 0, 0


class Cpu0Others:
    """Share of CPU 0 (the server's core) used by anything but the worker over an interval:
    other work on the machine that competed with the server under test."""

    def __init__(self, worker):
        self.worker = worker
        self.busy0, self.total0 = cpu_jiffies(0)
        self.worker0 = cpu_seconds(worker)

    def share(self):
        busy, total = cpu_jiffies(0)
        if total <= self.total0:
            return None
        others = (busy - self.busy0) / CLK_TCK - (cpu_seconds(self.worker) - self.worker0)
        return max(0.0, others / ((total - self.total0) / CLK_TCK))


def worker_pid(root):
    """The process that serves: the largest leaf of the tree under `root` (the master's worker
    child for deployctl, Gunicorn and Granian; `root` itself for single-process servers)."""
    leaves = []
    stack = [root]
    seen = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        kids = children(pid)
        if kids:
            stack.extend(kids)
        else:
            leaves.append(pid)
    return max(leaves, key=rss_kib) if leaves else root


def mib(kib):
    return kib / 1024.0


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def percentile(values, q):
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    values = sorted(values)
    if not values:
        return None
    k = max(1, math.ceil(q / 100.0 * len(values)))
    return values[min(k, len(values)) - 1]
