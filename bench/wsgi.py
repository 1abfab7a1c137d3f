"""Requests/s, p99, RSS and start-up time of the embedded server and its peers, same run.

Method (reference/benchmarks.md): one worker process pinned to CPU 0, wrk pinned to CPU 1
(`wrk -t1 -c64`), a discarded warm-up, then rounds that alternate between servers; medians
are quoted, and ratios against peers measured in this run. Every server listens on
127.0.0.1 and is stopped by PID; every wrk run is bounded in time.

Run through bench/wsgi.sh, which installs the peers.
"""

import json
import os
import resource
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "bench", "apps")
VENV = os.path.join(ROOT, ".bench", "venv")
SERVER = os.path.join(ROOT, "target", "release", "deployctl-server")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
STARTS = int(os.environ.get("BENCH_STARTS", "5"))
PY = os.path.join(VENV, "bin", "python")
# Another deployctl-server binary (e.g. the previous commit's) measured in the same run, for
# "this change costs at most N %" claims.
BASELINE = os.environ.get("BENCH_BASELINE")
# Comma-separated prefixes of the server names to run (default: all).
ONLY = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(module, port):
    """name -> argv for one worker serving `module:app` on `port`."""
    bind = "127.0.0.1:%d" % port
    all_servers = {
        "deployctl (1 thread, inline)": [SERVER, module + ":app", "--bind", bind, "--chdir", APPS, "--venv", VENV],
        "baseline deployctl (1 thread, inline)": [
            BASELINE or SERVER, module + ":app", "--bind", bind, "--chdir", APPS, "--venv", VENV,
        ],
        "deployctl (2 threads, pool)": [
            SERVER, module + ":app", "--bind", bind, "--chdir", APPS, "--venv", VENV, "--threads", "2",
        ],
        "bjoern": [
            PY, "-c",
            "import sys; sys.path.insert(0, %r); import bjoern, %s; bjoern.run(%s.app, '127.0.0.1', %d)"
            % (APPS, module, module, port),
        ],
        "granian (4 blocking threads)": [
            os.path.join(VENV, "bin", "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--blocking-threads", "4", "--working-dir", APPS, "--log-level", "warning",
            module + ":app",
        ],
        "uwsgi (1 process, --http11-socket)": [
            os.path.join(VENV, "bin", "uwsgi"), "--http11-socket", bind, "--chdir", APPS, "--module", module + ":app",
            "--virtualenv", VENV, "--disable-logging", "--die-on-term", "--listen", "1024",
        ],
        "waitress (4 threads)": [
            os.path.join(VENV, "bin", "waitress-serve"), "--listen=" + bind, "--threads=4", module + ":app",
        ],
        "granian (1 blocking thread)": [
            os.path.join(VENV, "bin", "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--blocking-threads", "1", "--working-dir", APPS, "--log-level", "warning",
            module + ":app",
        ],
        "gunicorn (sync)": [
            os.path.join(VENV, "bin", "gunicorn"), "-w", "1", "-b", bind, "--chdir", APPS, "--log-level", "warning",
            module + ":app",
        ],
    }
    if not BASELINE:
        del all_servers["baseline deployctl (1 thread, inline)"]
    return {
        name: argv for name, argv in all_servers.items()
        if name.startswith("deployctl (1") or not ONLY or any(name.startswith(p) for p in ONLY)
    }


def first_200(port, path, deadline):
    req = ("GET %s HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n" % path).encode()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(req)
                head = s.recv(64)
                if head.split(b" ")[1:2] == [b"200"]:
                    return True
        except (OSError, IndexError):
            pass
        time.sleep(0.002)
    return False


def start(argv, port, path):
    t0 = time.monotonic()
    p = subprocess.Popen(
        ["taskset", "-c", "0"] + argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd=APPS,
    )
    if not first_200(port, path, time.monotonic() + 30):
        stop(p)
        raise RuntimeError("no 200 from %s" % argv)
    return p, (time.monotonic() - t0) * 1000


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def tree(pid):
    """The process and its descendants (each process's own threads are counted in its stat)."""
    found, pids = [], [pid]
    while pids:
        q = pids.pop()
        found.append(q)
        try:
            with open("/proc/%d/task/%d/children" % (q, q)) as f:
                pids.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return found


def tree_rss_kib(pid):
    """RSS of the largest process in the tree (the worker that serves)."""
    best = 0
    for q in tree(pid):
        try:
            with open("/proc/%d/status" % q) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        best = max(best, int(line.split()[1]))
        except OSError:
            pass
    return best


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pid):
    """User + system CPU seconds used so far by the server's processes (all their threads)."""
    total = 0
    for q in tree(pid):
        try:
            with open("/proc/%d/stat" % q) as f:
                # Fields after the command, which is in parentheses and may hold spaces.
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / TICK


def children_cpu_s():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)", text)
    if m and m.group(2) == "m":
        return float(m.group(1)) * 60000
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def wrk(port, path, seconds, pid=None):
    """One wrk run. With `pid`, also the server's CPU time per request (µs, user + system,
    from /proc: the figure that does not depend on how fast the load generator is) and the
    load generator's own CPU use (% of its core: near 100 % means wrk, not the server, is
    the bound)."""
    server_before = tree_cpu_s(pid) if pid else 0.0
    wrk_before = children_cpu_s()
    t0 = time.monotonic()
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d%ds" % seconds, "--latency",
         "http://127.0.0.1:%d%s" % (port, path)],
        capture_output=True, text=True, timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    # Anchored: the "+/- Stdev" column above can also end in "50%".
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    result = {"rps": rps, "p50": p50, "p99": p99, "errors": errors}
    if pid:
        elapsed = time.monotonic() - t0
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        result["cpu_us"] = (tree_cpu_s(pid) - server_before) * 1e6 / max(requests, 1)
        result["wrk_cpu"] = 100 * (children_cpu_s() - wrk_before) / elapsed
    return result


def bench(module, path):
    print("\n## %s %s (%d x %d s, wrk -t1 -c64, server on CPU 0, wrk on CPU 1)" % (module, path, ROUNDS, SECONDS),
          flush=True)
    running = {}
    for name, _ in servers(module, 0).items():
        # Start → first 200 is the median of STARTS separate starts (one is noise).
        times = []
        for _ in range(STARTS - 1):
            port = free_port()
            p, ms = start(servers(module, port)[name], port, path)
            stop(p)
            times.append(ms)
        port = free_port()
        argv = servers(module, port)[name]
        p, startup = start(argv, port, path)
        times.append(startup)
        running[name] = {"proc": p, "port": port, "startup_ms": statistics.median(times), "runs": []}
    try:
        for r in running.values():
            wrk(r["port"], path, 2)  # warm-up, discarded
        for _ in range(ROUNDS):
            for r in running.values():
                r["runs"].append(wrk(r["port"], path, SECONDS, r["proc"].pid))
        for r in running.values():
            r["rss_mib"] = tree_rss_kib(r["proc"].pid) / 1024
    finally:
        for r in running.values():
            stop(r["proc"])
    rows = []
    for name, r in running.items():
        rows.append({
            "server": name,
            "rps": statistics.median(x["rps"] for x in r["runs"]),
            "p50": statistics.median(x["p50"] for x in r["runs"]),
            "p99": statistics.median(x["p99"] for x in r["runs"]),
            "errors": sum(x["errors"] for x in r["runs"]),
            "rss_mib": r["rss_mib"],
            "startup_ms": r["startup_ms"],
            "cpu_us": statistics.median(x["cpu_us"] for x in r["runs"]),
            "wrk_cpu": statistics.median(x["wrk_cpu"] for x in r["runs"]),
        })
    ours = rows[0]["rps"]
    print("| server | req/s (median) | vs deployctl | p50 ms | p99 ms | errors | RSS MiB | start→200 ms "
          "| server CPU µs/req | wrk CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| %s | %.0f | %.2f× | %.2f | %.2f | %d | %.1f | %.0f | %.1f | %.0f |" % (
            row["server"], row["rps"], ours / row["rps"], row["p50"], row["p99"], row["errors"], row["rss_mib"],
            row["startup_ms"], row["cpu_us"], row["wrk_cpu"]))
    return rows


def main():
    results = {}
    for module, path in (("hello", "/"), ("flask_app", "/"), ("flask_app", "/json")):
        results["%s %s" % (module, path)] = bench(module, path)
    out = os.path.join(ROOT, "target", "bench-wsgi.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    print("\n(raw results: %s; 'vs deployctl' > 1 means deployctl is faster)" % out)


if __name__ == "__main__":
    sys.exit(main())
