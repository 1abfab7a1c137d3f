"""Latency of a well-behaved client while hostile clients hold the server: one worker process
each, deployctl (`--workers 1 --threads 1`) against Gunicorn (gthread with 4 threads, sync),
Granian (1 and 4 blocking threads) and bjoern, same run; deployctl `--threads 4` too (its pool
threads write streamed responses themselves, so it is measured alongside).

Per server (fresh start each round):
  1. warm-up: 20 probe requests, discarded;
  2. idle: the probe alone, RATE requests/s for SECONDS (alternating a fresh connection and a
     pooled keep-alive connection, each request bounded by PROBE_TIMEOUT);
  3. hostile: TRICKLE clients POST /upload with Content-Length 100000 and send the body one
     byte per second (each on its own connection; a connection the server ends is reopened),
     and NONREAD clients GET /big (100 MiB) with SO_RCVBUF 4096 set before connect and never
     read (reopened if the server resets them). Once they are all connected (+ SETTLE s), the
     same probe runs again for SECONDS;
  4. the worker's RSS (VmRSS of the master's child) at the end of the hostile phase and 2 s
     after the hostile clients closed (after one probe request).

The server runs on CPU 0 (`taskset -c 0`); the probe and the hostile clients (a separate
asyncio process) run on CPU 1. Probes are scheduled open-loop: one stuck probe does not delay
the next. Run through bench/slow_clients.sh.

Environment: BENCH_SECONDS (20), BENCH_RATE (10), BENCH_ROUNDS (1), BENCH_TRICKLE (50),
BENCH_NONREAD (50), BENCH_SETTLE (2), BENCH_ONLY (comma-separated name prefixes; the first
deployctl row always runs), BENCH_BASELINE (another deployctl-server binary, measured as an
extra row).
"""

import asyncio
import collections
import json
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_common as hc  # noqa: E402  (same directory)

SECONDS = float(os.environ.get("BENCH_SECONDS", "20"))
RATE = float(os.environ.get("BENCH_RATE", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
TRICKLE = int(os.environ.get("BENCH_TRICKLE", "50"))
NONREAD = int(os.environ.get("BENCH_NONREAD", "50"))
SETTLE = float(os.environ.get("BENCH_SETTLE", "2"))
ONLY = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]
BASELINE = os.environ.get("BENCH_BASELINE")
PROBE_TIMEOUT = 5.0
TARGET_DELAY_MS = 100.0
UPLOAD_LENGTH = 100000
# The hostile process stops by itself after this long even if nobody tells it to.
HOSTILE_MAX_SECONDS = SECONDS + SETTLE + 60

PROBE_REQ = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
TRICKLE_HEAD = (
    "POST /upload HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
    "Content-Length: %d\r\n\r\n" % UPLOAD_LENGTH
).encode()
BIG_REQ = b"GET /big HTTP/1.1\r\nHost: bench\r\n\r\n"


def servers(port):
    """name -> (argv, run by default)."""
    bind = "127.0.0.1:%d" % port
    b = os.path.join(hc.VENV, "bin")
    ours = ["slow_app:app", "--bind", bind, "--chdir", hc.APPS, "--venv", hc.VENV, "--workers", "1"]
    gran = [b + "/granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--working-dir", hc.APPS, "--log-level", "warning"]
    table = {
        "deployctl --threads 1": ([hc.SERVER] + ours + ["--threads", "1"], True),
        "baseline deployctl --threads 1": ([BASELINE or hc.SERVER] + ours + ["--threads", "1"], False),
        "deployctl --threads 4": ([hc.SERVER] + ours + ["--threads", "4"], True),
        "gunicorn gthread --threads 4": (
            [b + "/gunicorn", "-w", "1", "-k", "gthread", "--threads", "4", "-b", bind, "--chdir", hc.APPS,
             "--log-level", "warning", "slow_app:app"], True),
        "gunicorn sync": (
            [b + "/gunicorn", "-w", "1", "-b", bind, "--chdir", hc.APPS, "--log-level", "warning", "slow_app:app"],
            True),
        "granian --blocking-threads 1": (gran + ["--blocking-threads", "1", "slow_app:app"], True),
        "granian --blocking-threads 4": (gran + ["--blocking-threads", "4", "slow_app:app"], True),
        "bjoern": (
            [hc.PY, "-c", "import sys; sys.path.insert(0, %r); import bjoern, slow_app; "
             "bjoern.run(slow_app.app, '127.0.0.1', %d)" % (hc.APPS, port)], True),
    }
    if BASELINE:
        table["baseline deployctl --threads 1"] = (table["baseline deployctl --threads 1"][0], True)
    out = {}
    for name, (argv, default) in table.items():
        if ONLY:
            if name == "deployctl --threads 1" or any(name.startswith(p) for p in ONLY):
                out[name] = argv
        elif default:
            out[name] = argv
    return out


# ---------------------------------------------------------------- the probe (main process)

async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length, close = 0, False
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"connection" and b"close" in v.lower():
            close = True
    await reader.readexactly(length)
    return status, close


class Probe:
    def __init__(self, port):
        self.port = port
        self.pool = []  # idle keep-alive connections
        self.results = []  # (index in the schedule, kind, ms or None, outcome)
        self.retries = 0

    async def _request(self, kind, holder):
        if kind == "keep-alive" and self.pool:
            reader, writer = self.pool.pop()
            reused = True
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            reused = False
        holder.append(writer)
        try:
            writer.write(PROBE_REQ)
            status, close = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
            if not reused:
                raise
            # The server closed an idle pooled connection as we used it: one retry, timed in.
            writer.close()
            self.retries += 1
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            holder.append(writer)
            writer.write(PROBE_REQ)
            status, close = await read_response(reader)
        if kind == "keep-alive" and not close:
            holder.remove(writer)
            self.pool.append((reader, writer))
        return status

    async def one(self, i, kind):
        holder = []
        t0 = time.perf_counter()
        try:
            status = await asyncio.wait_for(self._request(kind, holder), PROBE_TIMEOUT)
            ms = (time.perf_counter() - t0) * 1000
            self.results.append((i, kind, ms, "ok" if status == 200 else "status %d" % status))
        except asyncio.TimeoutError:
            self.results.append((i, kind, None, "timeout"))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            self.results.append((i, kind, None, type(e).__name__))
        finally:
            for w in holder:
                w.close()

    async def run(self, seconds, rate):
        loop = asyncio.get_running_loop()
        n = int(seconds * rate)
        t_start = loop.time()
        tasks = []
        for i in range(n):
            delay = t_start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.one(i, "fresh" if i % 2 == 0 else "keep-alive")))
        await asyncio.gather(*tasks)
        for _, w in self.pool:
            w.close()
        self.pool.clear()


def probe(port, seconds, rate):
    p = Probe(port)
    asyncio.run(p.run(seconds, rate))
    return summarize(p.results, p.retries)


def summarize(results, retries=0):
    results = sorted(results)
    ok = [ms for _, _, ms, outcome in results if outcome == "ok"]
    failed = collections.Counter(outcome for _, _, _, outcome in results if outcome != "ok")
    by_kind = {}
    for kind in ("fresh", "keep-alive"):
        ms = [m for _, k, m, o in results if k == kind and o == "ok"]
        by_kind[kind] = {
            "p50": hc.percentile(ms, 50), "p99": hc.percentile(ms, 99), "max": max(ms) if ms else None,
            "failed": sum(1 for _, k, _, o in results if k == kind and o != "ok"),
        }
    return {
        "n": len(results), "over_100ms": sum(1 for ms in ok if ms > 100),
        "p50": hc.percentile(ok, 50), "p99": hc.percentile(ok, 99), "max": max(ok) if ok else None,
        # In schedule order: probe i started i / RATE seconds into the phase (None: failed).
        "ms": [None if ms is None else round(ms, 3) for _, _, ms, _ in results],
        "failed": sum(failed.values()), "failures": dict(failed), "retries": retries, "by_kind": by_kind,
    }


# ------------------------------------------------------ the hostile clients (child process)

async def trickler(port, stats, stop):
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_errors"] += 1
            await asyncio.sleep(1)
            continue
        stats["trickle_connections"] += 1
        answer = None
        try:
            writer.write(TRICKLE_HEAD)
            stats["trickle_heads_sent"] += 1
            reply = asyncio.ensure_future(reader.read(256))
            stopped = asyncio.ensure_future(stop.wait())
            sent = 0
            while sent < UPLOAD_LENGTH and not stop.is_set():
                writer.write(b"x")
                await writer.drain()
                sent += 1
                stats["trickle_bytes"] += 1
                done, _ = await asyncio.wait({reply, stopped}, timeout=1, return_when=asyncio.FIRST_COMPLETED)
                if reply in done:
                    answer = reply.result()
                    break
            stopped.cancel()
            if answer is None:
                reply.cancel()
        except (OSError, asyncio.IncompleteReadError) as e:
            answer = type(e).__name__.encode()
        if answer is not None:
            # The server ended the upload (an answer, or a close) before the client did.
            stats["trickle_ended_by_server"] += 1
            first = answer.split(b"\r\n", 1)[0][:40].decode("latin-1") or "EOF"
            stats["trickle_endings"][first] = stats["trickle_endings"].get(first, 0) + 1
        writer.close()


async def nonreader(port, stats, stop, ready):
    loop = asyncio.get_running_loop()
    first = True
    while not stop.is_set():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        try:
            await loop.sock_connect(s, ("127.0.0.1", port))
            await loop.sock_sendall(s, BIG_REQ)
        except OSError:
            stats["connect_errors"] += 1
            s.close()
            await asyncio.sleep(1)
            continue
        stats["nonread_connections"] += 1
        if first:
            ready.append(1)
            first = False
        poller = select.poll()
        poller.register(s, select.POLLERR | select.POLLHUP | select.POLLRDHUP)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1)
            except asyncio.TimeoutError:
                pass
            if any(ev & (select.POLLERR | select.POLLHUP | select.POLLRDHUP) for _, ev in poller.poll(0)):
                stats["nonread_ended_by_server"] += 1
                break
        s.close()


async def hostile_main(port):
    stats = collections.defaultdict(int)
    stats["trickle_endings"] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(HOSTILE_MAX_SECONDS, stop.set)
    ready = []
    tasks = []
    # Started together, interleaved.
    for i in range(max(TRICKLE, NONREAD)):
        if i < TRICKLE:
            tasks.append(asyncio.create_task(trickler(port, stats, stop)))
        if i < NONREAD:
            tasks.append(asyncio.create_task(nonreader(port, stats, stop, ready)))
    deadline = loop.time() + 10
    while loop.time() < deadline and not stop.is_set():
        if stats["trickle_heads_sent"] >= TRICKLE and len(ready) >= NONREAD:
            break
        await asyncio.sleep(0.05)
    print(json.dumps({"ready": True, "trickle": stats["trickle_heads_sent"], "nonread": len(ready)}), flush=True)
    await stop.wait()
    await asyncio.wait(tasks, timeout=5)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    stats["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
    print(json.dumps(stats), flush=True)


def start_hostile(port):
    p = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--hostile", str(port)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
    )
    line = wait_line(p, 15)
    return p, json.loads(line) if line else {"ready": False}


def wait_line(p, timeout):
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if r else None


def stop_hostile(p):
    stats = {}
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    line = wait_line(p, 15)
    if line:
        stats = json.loads(line)
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return stats


# ------------------------------------------------------------------------------ driver

class Sampler(threading.Thread):
    """Peak VmRSS of one process, sampled every 100 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.halt = pid, 0, threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, hc.rss_kib(self.pid))
            self.halt.wait(0.1)


def one_run(name, argv, port):
    proc = hc.start_server(name, argv, port)
    try:
        worker = hc.worker_pid(proc.pid)
        for _ in range(20):
            hc.http_get(port, "/")
        cpu_i = hc.cpu_seconds(worker)
        others = hc.Cpu0Others(worker)
        idle = probe(port, SECONDS, RATE)
        others_idle = others.share()
        cpu_idle = hc.cpu_seconds(worker) - cpu_i
        rss_idle = hc.rss_kib(worker)
        cpu0 = hc.cpu_seconds(worker)
        hostile, ready = start_hostile(port)
        time.sleep(SETTLE)
        sampler = Sampler(worker)
        sampler.start()
        t0 = time.monotonic()
        others = hc.Cpu0Others(worker)
        loaded = probe(port, SECONDS, RATE)
        others_loaded = others.share()
        loaded_wall = time.monotonic() - t0
        rss_end = hc.rss_kib(worker)
        sampler.halt.set()
        cpu_loaded = hc.cpu_seconds(worker) - cpu0
        worker_now = hc.worker_pid(proc.pid)
        hostile_stats = stop_hostile(hostile)
        time.sleep(2)
        after_status = hc.http_get(port, "/", timeout=PROBE_TIMEOUT)
        time.sleep(0.2)
        worker_after = hc.worker_pid(proc.pid)
        rss_after = hc.rss_kib(worker_after)
        return {
            "idle": idle, "loaded": loaded, "ready": ready, "hostile": hostile_stats,
            "rss_idle": rss_idle, "rss_end": rss_end, "rss_peak": sampler.peak, "rss_after": rss_after,
            "after_status": after_status, "worker_cpu_s": cpu_loaded, "worker_cpu_idle_s": cpu_idle, "loaded_wall_s": loaded_wall,
            "worker_replaced": worker_now != worker or worker_after != worker, "log": proc.log_path,
            "loadavg_1min_end": os.getloadavg()[0], "cpu0_others_idle": others_idle,
            "cpu0_others_loaded": others_loaded,
        }
    finally:
        hc.stop_server(proc)


def pct(x):
    return None if x is None else 100 * x


def fmt(x, spec="%.1f"):
    return "—" if x is None else spec % x


def triple(s):
    return "%s / %s / %s" % (fmt(s["p50"]), fmt(s["p99"]), fmt(s["max"]))


def med(runs, *path):
    vals = []
    for r in runs:
        v = r
        for k in path:
            v = v[k]
        vals.append(v)
    return hc.median(vals)


def main():
    hc.pin_self_to_cpu1()
    names = list(servers(0))
    print("# Slow and non-reading clients: %d x %.0f s probe at %g req/s per phase; %d trickling uploads + "
          "%d non-reading /big; server on CPU 0, clients on CPU 1; %s" % (
              ROUNDS, SECONDS, RATE, TRICKLE, NONREAD, time.strftime("%Y-%m-%d %H:%M")), flush=True)
    results = {n: [] for n in names}
    for rnd in range(ROUNDS):
        for name in names:
            port = hc.free_port()
            print("round %d: %s ..." % (rnd + 1, name), end=" ", flush=True)
            r = one_run(name, servers(port)[name], port)
            results[name].append(r)
            print("idle p99 %s ms, hostile p99 %s ms, failed %d/%d (load average %.1f)" % (
                fmt(r["idle"]["p99"]), fmt(r["loaded"]["p99"]), r["loaded"]["failed"], r["loaded"]["n"],
                r["loadavg_1min_end"]), flush=True)
    out = os.path.join(hc.ROOT, "target", "bench-slow-clients.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    report(results)
    print("(raw results: %s; `python3 bench/slow_clients.py --report FILE` prints the tables again; server logs: %s)"
          % (out, hc.LOGS))


def report(results):
    names = list(results)
    rounds = len(results[names[0]])
    n = results[names[0]][0]["loaded"]["n"]

    def cell(runs, phase):
        return "%s / %s / %s" % (fmt(med(runs, phase, "p50")), fmt(med(runs, phase, "p99")),
                                 fmt(med(runs, phase, "max")))

    print("\nMedians of %d round(s):" % rounds)
    print("\n| server | probe p50 / p99 / max ms, idle | probe p50 / p99 / max ms, hostile load | "
          "probes > 100 ms idle / hostile | failed probes idle / hostile (of %d) | worker RSS MiB: idle / end of load / 2 s after | "
          "worker CPU s: idle phase / hostile phase |" % n)
    print("|---|---|---|---|---|---|---|")
    for name in names:
        runs = results[name]
        print("| %s | %s | %s | %s / %s | %s / %s | %s / %s / %s%s | %s / %s |" % (
            name, cell(runs, "idle"), cell(runs, "loaded"),
            fmt(med(runs, "idle", "over_100ms"), "%d"), fmt(med(runs, "loaded", "over_100ms"), "%d"),
            fmt(med(runs, "idle", "failed"), "%d"), fmt(med(runs, "loaded", "failed"), "%d"),
            fmt(hc.mib(med(runs, "rss_idle"))), fmt(hc.mib(med(runs, "rss_end"))), fmt(hc.mib(med(runs, "rss_after"))),
            " (worker replaced)" if any(r["worker_replaced"] for r in runs) else "",
            fmt(med(runs, "worker_cpu_idle_s"), "%.2f"), fmt(med(runs, "worker_cpu_s"), "%.2f")))

    print("\nUnder hostile load, by probe kind (p50 / p99 / max ms, failed), and what the hostile clients saw "
          "(last round):\n")
    print("| server | fresh connection | keep-alive connection | probe failures | uploads ended by server "
          "(how) | non-readers reset by server | hostile connections opened | client CPU s (hostile) | "
          "CPU 0 used by other work, idle / hostile phase |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        r = results[name][-1]
        bk = r["loaded"]["by_kind"]
        h = r["hostile"]
        print("| %s | %s, %d | %s, %d | %s | %s %s | %s | %s + %s | %s | %s / %s |" % (
            name, triple(bk["fresh"]), bk["fresh"]["failed"], triple(bk["keep-alive"]), bk["keep-alive"]["failed"],
            ", ".join("%s %d" % kv for kv in sorted(r["loaded"]["failures"].items())) or "none",
            h.get("trickle_ended_by_server", 0 if h else "?"),
            json.dumps(h.get("trickle_endings", {})) if h.get("trickle_endings") else "",
            h.get("nonread_ended_by_server", 0 if h else "?"), h.get("trickle_connections", 0 if h else "?"),
            h.get("nonread_connections", 0 if h else "?"), h.get("cpu_s", "?"),
            fmt(pct(r["cpu0_others_idle"]), "%.0f %%"), fmt(pct(r["cpu0_others_loaded"]), "%.0f %%")))

    print("\nEach round, probe p99 / max ms idle → hostile (failed), and CPU 0 time not charged to the worker "
          "(other work on the machine) idle / hostile:\n")
    for name in names:
        print("- %s: %s" % (name, "; ".join(
            "%s / %s → %s / %s (%d), %s / %s" % (
                fmt(r["idle"]["p99"]), fmt(r["idle"]["max"]), fmt(r["loaded"]["p99"]), fmt(r["loaded"]["max"]),
                r["loaded"]["failed"], fmt(pct(r["cpu0_others_idle"]), "%.0f %%"),
                fmt(pct(r["cpu0_others_loaded"]), "%.0f %%"))
            for r in results[name])))
    ours = results[names[0]]
    delay_p99 = med(ours, "loaded", "p99") - med(ours, "idle", "p99") if ours and med(ours, "loaded", "p99") else None
    delay_max = med(ours, "loaded", "max") - med(ours, "idle", "max") if ours and med(ours, "loaded", "max") else None
    failed = med(ours, "loaded", "failed")
    met = delay_p99 is not None and delay_max is not None and delay_max <= TARGET_DELAY_MS and not failed
    print("\nTarget (%s): probe not delayed by more than %d ms by the hostile clients: p99 %+.1f ms, max %+.1f ms, "
          "%d failed -> %s" % (names[0], TARGET_DELAY_MS, delay_p99 or 0, delay_max or 0, failed or 0,
                              "met" if met else "MISSED"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--hostile":
        asyncio.run(hostile_main(int(sys.argv[2])))
    elif len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            report(json.load(f))
    else:
        sys.exit(main())
