"""Worker memory under a flood of huge request heads: deployctl (`--workers 1 --threads 1`)
against Gunicorn gthread and Granian, same run.

The head is legal for every server measured: `GET / HTTP/1.1`, `Host`, and 99 fields
`X-Pad-NN: aaa…` of 8,100 bytes each (under the 8,190-byte field limit of deployctl and
Gunicorn), about 802 KB in all; `--limit-request-fields 200` for deployctl and Gunicorn (the
head has 100 fields), `--http1-buffer-size 1048576` for Granian (its default, 417,792 bytes,
is smaller than the head). A single such request is sent first and must get a 200.

Per server (fresh start each round):
  1. idle: 20 small requests, then the worker's VmRSS (the master's child; the process itself
     for single-process servers); one legal huge head on its own (expects a 200);
  2. connect: CONNS connections opened (non-blocking), all before any head byte is sent;
  3. send: rounds across all connections, CHUNK bytes to each connection per round (non-
     blocking; a connection whose socket is full is skipped), PAUSE seconds between rounds,
     so every head is in flight at once; responses are read as they come, and a connection
     that got one is sent nothing more; bounded by SEND_DEADLINE;
  4. wait: up to WAIT seconds for the remaining responses, then every connection is closed;
  5. after: a probe request (GET /) every 0.5 s for AFTER seconds, so the loop runs its
     periodic sweep; the worker's VmRSS at the end.
The worker's VmRSS is sampled every 20 ms during 2–4 (peak). Server on CPU 0, this client on
CPU 1. Target for deployctl: RSS after within 10 % of idle.

Environment: BENCH_CONNS (1000), BENCH_CHUNK (16384), BENCH_PAUSE (0.05), BENCH_ROUNDS (1),
BENCH_SEND_DEADLINE (90), BENCH_WAIT (30), BENCH_AFTER (5), BENCH_ONLY (comma-separated name
prefixes; the first deployctl row always runs; also selects optional rows), BENCH_BASELINE
(another deployctl-server binary). Run through bench/head_flood.sh.
"""

import collections
import errno
import json
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hostile_common as hc  # noqa: E402  (same directory)

CONNS = int(os.environ.get("BENCH_CONNS", "1000"))
CHUNK = int(os.environ.get("BENCH_CHUNK", "16384"))
PAUSE = float(os.environ.get("BENCH_PAUSE", "0.05"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1"))
SEND_DEADLINE = float(os.environ.get("BENCH_SEND_DEADLINE", "90"))
WAIT = float(os.environ.get("BENCH_WAIT", "30"))
AFTER = float(os.environ.get("BENCH_AFTER", "5"))
ONLY = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]
BASELINE = os.environ.get("BENCH_BASELINE")
TARGET_AFTER = 1.10
FIELDS = 99
FIELD_LINE = 8100  # bytes per field line, CRLF not included

HEAD = (
    b"GET / HTTP/1.1\r\nHost: bench\r\n"
    + b"".join(b"X-Pad-%02d: " % i + b"a" * (FIELD_LINE - 10) + b"\r\n" for i in range(FIELDS))
    + b"\r\n"
)


def servers(port):
    """name -> (argv, run by default)."""
    bind = "127.0.0.1:%d" % port
    b = os.path.join(hc.VENV, "bin")
    ours = ["slow_app:app", "--bind", bind, "--chdir", hc.APPS, "--venv", hc.VENV, "--workers", "1",
            "--limit-request-fields", "200"]
    gran = [b + "/granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--working-dir", hc.APPS, "--log-level", "warning"]
    guni = [b + "/gunicorn", "-w", "1", "-b", bind, "--chdir", hc.APPS, "--log-level", "warning",
            "--limit-request-fields", "200"]
    table = {
        "deployctl --threads 1": ([hc.SERVER] + ours + ["--threads", "1"], True),
        "baseline deployctl --threads 1": ([BASELINE or hc.SERVER] + ours + ["--threads", "1"], bool(BASELINE)),
        "deployctl --threads 4": ([hc.SERVER] + ours + ["--threads", "4"], False),
        "gunicorn gthread --threads 4": (guni + ["-k", "gthread", "--threads", "4", "slow_app:app"], True),
        "gunicorn sync": (guni + ["slow_app:app"], False),
        "granian --blocking-threads 1 --http1-buffer-size 1M": (
            gran + ["--blocking-threads", "1", "--http1-buffer-size", "1048576", "slow_app:app"], True),
        "granian --blocking-threads 1 (default 408 KiB buffer)": (gran + ["--blocking-threads", "1", "slow_app:app"], False),
    }
    out = {}
    for name, (argv, default) in table.items():
        if ONLY:
            if name == "deployctl --threads 1" or any(name.startswith(p) for p in ONLY):
                out[name] = argv
        elif default:
            out[name] = argv
    return out


def single_head(port, timeout=10):
    """Send one huge head on its own; the status line's code, or what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(HEAD)
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    return "closed"
                data += chunk
            return data.split(b" ", 2)[1].decode()
    except OSError as e:
        return type(e).__name__


class Conn:
    __slots__ = ("sock", "fd", "sent", "status", "buf", "eof", "error", "connected", "sent_at_status")

    def __init__(self, sock):
        self.sock, self.fd = sock, sock.fileno()
        self.sent, self.status, self.buf, self.eof, self.error, self.connected = 0, None, b"", False, None, False
        self.sent_at_status = None

    def outcome(self):
        if not self.connected:
            return "connect failed"
        if self.status is not None:
            return self.status
        if self.error:
            return "%s before a response" % self.error
        if self.eof:
            return "closed without a response"
        if self.sent < len(HEAD):
            return "head not all sent, no response"
        return "no response"


class Sampler(threading.Thread):
    """Peak VmRSS of one process, sampled every 20 ms (and when the peak was reached)."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.peak_at, self.halt = pid, 0, None, threading.Event()

    def run(self):
        while not self.halt.is_set():
            rss = hc.rss_kib(self.pid)
            if rss > self.peak:
                self.peak, self.peak_at = rss, time.monotonic()
            self.halt.wait(0.02)


def read_ready(ep, by_fd, timeout):
    for fd, _ in ep.poll(timeout):
        c = by_fd.get(fd)
        if c is None:
            continue
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError as e:
            c.error = errno.errorcode.get(e.errno, type(e).__name__)
            data = b""
        if data:
            c.buf = (c.buf + data)[:4096]
            if c.status is None and b"\r\n" in c.buf:
                c.status = c.buf.split(b" ", 2)[1].decode("latin-1")
                c.sent_at_status = c.sent
        else:
            c.eof = True
            ep.unregister(fd)
            del by_fd[fd]


def flood(port):
    """Phases 2–4. Returns the connections and the phase durations."""
    t0 = time.monotonic()
    times = {"t0": t0}
    conns = []
    wep = select.epoll()
    for _ in range(CONNS):
        s = socket.socket()
        s.setblocking(False)
        c = Conn(s)
        conns.append(c)
        err = s.connect_ex(("127.0.0.1", port))
        if err == 0:
            c.connected = True
        elif err in (errno.EINPROGRESS, errno.EAGAIN):
            wep.register(c.fd, select.EPOLLOUT)
        else:
            c.error = errno.errorcode.get(err, str(err))
    pending = {c.fd: c for c in conns if not c.connected and c.error is None}
    deadline = time.monotonic() + 15
    while pending and time.monotonic() < deadline:
        for fd, _ in wep.poll(0.1):
            c = pending.pop(fd, None)
            if c is None:
                continue
            wep.unregister(fd)
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                c.connected = True
            else:
                c.error = errno.errorcode.get(err, str(err))
    wep.close()
    times["connect_s"] = time.monotonic() - t0

    ep = select.epoll()
    by_fd = {}
    for c in conns:
        if c.connected:
            ep.register(c.fd, select.EPOLLIN)
            by_fd[c.fd] = c
    mv = memoryview(HEAD)
    total = len(HEAD)
    t1 = time.monotonic()
    send_deadline = t1 + SEND_DEADLINE
    rounds = 0
    in_flight_max = 0
    while time.monotonic() < send_deadline:
        active = [c for c in conns if c.connected and c.status is None and not c.eof and c.error is None
                  and c.sent < total]
        if not active:
            break
        rounds += 1
        in_flight_max = max(in_flight_max, sum(1 for c in active if c.sent > 0))
        for c in active:
            try:
                c.sent += c.sock.send(mv[c.sent:c.sent + CHUNK])
            except BlockingIOError:
                pass
            except OSError as e:
                c.error = errno.errorcode.get(e.errno, type(e).__name__)
        read_ready(ep, by_fd, 0)
        time.sleep(PAUSE)
    times["send_s"] = time.monotonic() - t1
    times["t_send"] = t1
    times["send_rounds"] = rounds
    times["heads_in_flight_max"] = in_flight_max

    t2 = time.monotonic()
    wait_deadline = t2 + WAIT
    while time.monotonic() < wait_deadline:
        if all(c.status is not None or c.eof or c.error or not c.connected for c in conns):
            break
        read_ready(ep, by_fd, 0.05)
    times["wait_s"] = time.monotonic() - t2
    times["t_wait"] = t2
    for c in conns:
        c.sock.close()
    ep.close()
    return conns, times


def one_run(name, argv, port):
    proc = hc.start_server(name, argv, port)
    try:
        for _ in range(20):
            hc.http_get(port, "/")
        time.sleep(0.5)
        worker = hc.worker_pid(proc.pid)
        rss_idle = hc.rss_kib(worker)
        single = single_head(port)
        time.sleep(0.5)
        rss_single = hc.rss_kib(worker)
        cpu0 = hc.cpu_seconds(worker)
        sampler = Sampler(worker)
        sampler.start()
        others = hc.Cpu0Others(worker)
        conns, times = flood(port)
        others_share = others.share()
        sampler.halt.set()
        sampler.join()
        cpu_flood = hc.cpu_seconds(worker) - cpu0
        rss_closed = hc.rss_kib(worker)
        probes = []
        series = []
        t_closed = time.monotonic()
        t_end = t_closed + AFTER
        first_200 = None
        # AFTER seconds; longer (up to 60 s more) while the server does not answer yet.
        while time.monotonic() < t_end or (first_200 is None and time.monotonic() < t_end + 60):
            status = hc.http_get(port, "/", timeout=2)
            if status == 200 and first_200 is None:
                first_200 = time.monotonic() - t_closed
            if time.monotonic() < t_end:
                probes.append(status)
                series.append(round(hc.mib(hc.rss_kib(worker)), 1))
            time.sleep(0.5)
        refused_at = sorted(c.sent_at_status for c in conns if c.status == "503")
        t = times
        peak_phase = None
        if sampler.peak_at is not None:
            peak_phase = ("connect" if sampler.peak_at < t["t_send"] else
                          "send +%.1f s" % (sampler.peak_at - t["t_send"]) if sampler.peak_at < t["t_wait"] else
                          "wait +%.1f s" % (sampler.peak_at - t["t_wait"]))
        worker_after = hc.worker_pid(proc.pid)
        rss_after = hc.rss_kib(worker_after)
        outcomes = collections.Counter(str(c.outcome()) for c in conns)
        return {
            "single_head": single, "rss_idle": rss_idle, "rss_single": rss_single, "rss_peak": sampler.peak,
            "hwm": hc.hwm_kib(worker), "rss_closed": rss_closed, "rss_after": rss_after, "rss_after_series": series,
            "outcomes": dict(outcomes), "times": times, "worker_cpu_s": cpu_flood,
            "probes_after": collections.Counter(str(p) for p in probes), "alive": proc.poll() is None,
            "first_200_after_close_s": first_200, "peak_phase": peak_phase, "cpu0_others": others_share,
            "head_bytes_sent_before_503": (
                {"n": len(refused_at), "min": refused_at[0], "median": hc.median(refused_at), "max": refused_at[-1],
                 "sum": sum(refused_at)} if refused_at else None),
            "worker_replaced": worker_after != worker, "log": proc.log_path,
        }
    finally:
        hc.stop_server(proc)


def fmt(x, spec="%.1f"):
    return "—" if x is None else spec % x


def main():
    hc.pin_self_to_cpu1()
    names = list(servers(0))
    print("# Head flood: %d connections x %d-byte heads (%d fields), %d-byte chunks per connection per round, "
          "%.0f ms between rounds; %d round(s); server on CPU 0, client on CPU 1; %s" % (
              CONNS, len(HEAD), FIELDS + 1, CHUNK, PAUSE * 1000, ROUNDS, time.strftime("%Y-%m-%d %H:%M")), flush=True)
    results = {n: [] for n in names}
    for rnd in range(ROUNDS):
        for name in names:
            port = hc.free_port()
            print("round %d: %s ..." % (rnd + 1, name), end=" ", flush=True)
            r = one_run(name, servers(port)[name], port)
            results[name].append(r)
            print("single head %s; %s; RSS idle %.1f, peak %.1f, after %.1f MiB (load average %.1f)" % (
                r["single_head"], json.dumps(r["outcomes"]), hc.mib(r["rss_idle"]), hc.mib(r["rss_peak"]),
                hc.mib(r["rss_after"]), os.getloadavg()[0]), flush=True)
    out = os.path.join(hc.ROOT, "target", "bench-head-flood.json")
    with open(out, "w") as f:
        json.dump(results, f, indent=2)
    report(results)
    print("(raw results: %s; `python3 bench/head_flood.py --report FILE` prints the tables again; server logs: %s)"
          % (out, hc.LOGS))


def report(results):
    names = list(results)
    rounds = len(results[names[0]])

    def m(runs, key):
        return hc.median([r[key] for r in runs])

    def mt(runs, key):
        return hc.median([r["times"][key] for r in runs])

    print("\nMedians of %d round(s):\n" % rounds)
    print("| server | one huge head alone | 200 served | 503 busy | other answers / failures | "
          "worker RSS MiB: idle / peak / after (+%.0f s) | after ÷ idle | connect / send / wait s | "
          "worker CPU s (flood) |" % AFTER)
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        runs = results[name]
        last = runs[-1]
        kinds = sorted({k for r in runs for k in r["outcomes"] if k not in ("200", "503")})
        other = {k: hc.median([r["outcomes"].get(k, 0) for r in runs]) for k in kinds}
        print("| %s | %s | %s | %s | %s | %s / %s / %s%s | %.2f | %.1f / %.1f / %.1f | %.2f |" % (
            name, "/".join(sorted({str(r["single_head"]) for r in runs})),
            fmt(hc.median([r["outcomes"].get("200", 0) for r in runs]), "%d"),
            fmt(hc.median([r["outcomes"].get("503", 0) for r in runs]), "%d"),
            ", ".join("%s: %d" % kv for kv in sorted(other.items())) or "none",
            fmt(hc.mib(m(runs, "rss_idle"))), fmt(hc.mib(m(runs, "rss_peak"))), fmt(hc.mib(m(runs, "rss_after"))),
            " (worker replaced)" if any(r["worker_replaced"] for r in runs)
            else ("" if all(r["alive"] for r in runs) else " (server exited)"),
            m(runs, "rss_after") / max(1, m(runs, "rss_idle")), mt(runs, "connect_s"), mt(runs, "send_s"),
            mt(runs, "wait_s"), m(runs, "worker_cpu_s")))
    print("\nEach round: served / refused, RSS MiB idle → peak → after, first 200 after the close:\n")
    for name in names:
        print("- %s: %s" % (name, "; ".join(
            "%s, %.1f → %.1f → %.1f, %s" % (
                json.dumps(r["outcomes"], sort_keys=True), hc.mib(r["rss_idle"]), hc.mib(r["rss_peak"]),
                hc.mib(r["rss_after"]),
                "+%.1f s" % r["first_200_after_close_s"] if r["first_200_after_close_s"] is not None else "none")
            for r in results[name])))
    print("\nRSS after the connections closed, sampled every 0.5 s with a probe request each time (last round):\n")
    for name in names:
        last = results[name][-1]
        print("- %s: %s MiB; probes: %s; first 200 after the close: %s; send rounds %d, heads in flight at "
              "once (max) %d; peak RSS (VmHWM %.1f MiB) reached in phase %s; CPU 0 used by other work "
              "during the flood: %s" % (
                  name, " → ".join("%.1f" % x for x in last["rss_after_series"]),
                  ", ".join("%s × %d" % kv for kv in sorted(last["probes_after"].items())),
                  "+%.1f s" % last["first_200_after_close_s"] if last["first_200_after_close_s"] is not None
                  else "none within %.0f s" % (AFTER + 60),
                  last["times"]["send_rounds"], last["times"]["heads_in_flight_max"], hc.mib(last["hwm"]),
                  last["peak_phase"],
                  "—" if last["cpu0_others"] is None else "%.0f %%" % (100 * last["cpu0_others"])))
        b = last["head_bytes_sent_before_503"]
        if b:
            print("  head bytes a connection had sent when its 503 arrived: min %d, median %d, max %d; "
                  "sum over the %d refused connections %.1f MiB" % (
                      b["min"], b["median"], b["max"], b["n"], hc.mib(b["sum"] / 1024.0)))
    ours = results[names[0]]
    ratio = m(ours, "rss_after") / max(1, m(ours, "rss_idle"))
    print("\nTarget (%s): RSS after within %d %% of idle: %.1f → %.1f MiB (%+.1f %%) -> %s" % (
        names[0], round((TARGET_AFTER - 1) * 100), hc.mib(m(ours, "rss_idle")), hc.mib(m(ours, "rss_after")),
        (ratio - 1) * 100, "met" if ratio <= TARGET_AFTER else "MISSED"))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--report":
        with open(sys.argv[2]) as f:
            report(json.load(f))
    else:
        sys.exit(main())
