"""Instructions per request of the embedded server, counted by valgrind's callgrind: the
regression guard of the request path (parse, environ, app call, response, the event loop).

Unlike requests per second, an instruction count does not depend on what else the machine is
doing: the same binary, app and request give the same figure within ~0.1 %, so a change of
a few percent is visible on a shared 2-core machine. It counts user space only (the kernel's
share of a request, its syscalls, is not in it: see bench/wsgi.sh for the whole).

Per app: the release server runs under callgrind (`--workers 1`, PYTHONHASHSEED=0), a
client sends WARMUP keep-alive requests on 16 connections, the worker's counters are zeroed
(`callgrind_control -z`), REQUESTS more requests are sent, and the counters dumped
(`callgrind_control -d`). The figure is the dump's total over REQUESTS, and it is split by
binary (deployctl-server, libpython, libc, the rest).

    bash bench/instructions.sh             # compare with bench/instructions.json
    bash bench/instructions.sh --record    # write the figures there (commit them)
    bash bench/instructions.sh --top 25    # also the 25 costliest functions per app

Exit status 1 when a figure is more than TOLERANCE above the recorded one.
"""

import argparse
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "bench", "apps")
VENV = os.path.join(ROOT, ".bench", "venv")
SERVER = os.path.join(ROOT, "target", "release", "deployctl-server")
RECORD = os.path.join(ROOT, "bench", "instructions.json")
TOLERANCE = 0.03
CASES = [
    # (name, module, path, warm-up, measured requests)
    ("raw WSGI /", "hello", "/", 2000, 10000),
    ("Flask /", "flask_app", "/", 500, 2000),
    ("Flask /json", "flask_app", "/json", 500, 2000),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests(port, path, total, conns=16, timeout=300):
    """`total` GETs on `conns` keep-alive connections, one outstanding per connection."""
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path).encode()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(min(conns, total)):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, bytearray())
        s.send(req)
        socks.append(s)
    done, sent = 0, len(socks)
    deadline = time.monotonic() + timeout
    while done < total:
        if time.monotonic() > deadline:
            raise RuntimeError("only %d of %d answers in %d s" % (done, total, timeout))
        for key, _ in sel.select(5):
            buf, s = key.data, key.fileobj
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a connection")
            buf += chunk
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end]).lower()
                if not head.startswith(b"http/1.1 200"):
                    raise RuntimeError("not a 200: %r" % head[:80])
                m = re.search(rb"content-length: *(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(buf) < end + 4 + length:
                    break
                del buf[: end + 4 + length]
                done += 1
                if sent < total:
                    s.send(req)
                    sent += 1
    for s in socks:
        s.close()


def wait_port(port, proc, secs=180):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not listen")


def worker_pid(master):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (master, master)) as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("no worker")


def measure(module, path, warmup, total, out_dir):
    port = free_port()
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = os.path.join(out_dir, "cg.%p")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=" + out,
         SERVER, module + ":app", "--bind", "127.0.0.1:%d" % port, "--chdir", APPS, "--venv", VENV,
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=APPS, env=env,
    )
    try:
        wait_port(port, proc)
        worker = worker_pid(proc.pid)
        requests(port, path, warmup)
        subprocess.run(["callgrind_control", "-z", str(worker)], check=True, capture_output=True)
        requests(port, path, total)
        subprocess.run(["callgrind_control", "-d", str(worker)], check=True, capture_output=True)
        dump = os.path.join(out_dir, "cg.%d.1" % worker)
        deadline = time.monotonic() + 30
        while not os.path.exists(dump) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return dump


def annotate(dump):
    """(total, {binary: instructions}, [(instructions, function)]) of a callgrind dump."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--inclusive=no", dump],
        check=True, capture_output=True, text=True,
    ).stdout
    total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
    by_binary, functions = {}, []
    for m in re.finditer(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*?):(.*) \[(.*)\]$", text, re.M):
        n = int(m.group(1).replace(",", ""))
        if n > total // 2:
            # A frame that was on the stack when the dump was taken (main, the loop, attach):
            # callgrind shows such frames with their inclusive cost.
            continue
        binary = os.path.basename(m.group(4))
        key = ("deployctl-server" if binary == "deployctl-server"
               else "libpython" if binary.startswith("libpython")
               else "libc" if binary.startswith("libc.")
               else "other")
        by_binary[key] = by_binary.get(key, 0) + n
        functions.append((n, "%s [%s]" % (m.group(3), binary)))
    functions.sort(reverse=True)
    return total, by_binary, functions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--record", action="store_true", help="write the figures to bench/instructions.json")
    ap.add_argument("--top", type=int, default=0, help="print the N costliest functions per case")
    args = ap.parse_args()
    recorded = {}
    if os.path.exists(RECORD):
        with open(RECORD) as f:
            recorded = json.load(f).get("per_request", {})
    results = {}
    worse = []
    print("| case | instructions / request | deployctl-server | libpython | libc | other | recorded | change |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, module, path, warmup, total in CASES:
            dump = measure(module, path, warmup, total, tmp)
            all_, by_binary, functions = annotate(dump)
            per = round(all_ / total)
            results[name] = per
            split = [round(by_binary.get(k, 0) / total) for k in ("deployctl-server", "libpython", "libc", "other")]
            old = recorded.get(name)
            change = "" if old is None else "%+.1f %%" % ((per - old) * 100 / old)
            if old is not None and per > old * (1 + TOLERANCE):
                worse.append(name)
            print("| %s | %d | %d | %d | %d | %d | %s | %s |" % ((name, per) + tuple(split) + (old or "—", change)))
            if args.top:
                print()
                for n, fn in functions[: args.top]:
                    print("    %8d  %s" % (round(n / total), fn))
                print()
            sys.stdout.flush()
    if args.record:
        with open(RECORD, "w") as f:
            json.dump({
                "what": "user-space instructions per request of the embedded server (callgrind); "
                        "bash bench/instructions.sh compares, --record rewrites",
                "server": "target/release/deployctl-server, --workers 1 --threads 1, PYTHONHASHSEED=0",
                "per_request": results,
            }, f, indent=2)
            f.write("\n")
        print("\nrecorded in %s" % RECORD)
    if worse:
        print("\nmore than %d %% above the recorded figure: %s" % (TOLERANCE * 100, ", ".join(worse)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
