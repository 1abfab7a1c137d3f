"""Issue 15's static-file measure, one worker each, pinned (the server on CPU 0, wrk on CPU 1):
a small stylesheet (2 KiB) served

- by deployctl-server itself (`--static /static/:7d=DIR`: on the I/O thread, sendfile, no
  Python), and
- by nginx (one worker, `location /static/ { alias DIR/; expires 7d; }`, `sendfile on` and
  `tcp_nopush on` as Debian's nginx.conf has them, the site's security headers),

`wrk -t1 -c64` over keep-alive, medians of ROUNDS runs, alternating; the ratio is
deployctl-server ÷ nginx. BENCH_BASELINE=/path/to/another/deployctl-server adds that build as a
third server in the same run (a before/after measure of a change: build the before first and
copy its binary away). Both answers are checked first: 200, the same bytes, one
`Cache-Control: max-age=604800`.

Run through bench/static.sh.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER = os.path.join(ROOT, "target", "release", "deployctl-server")
APPS = os.path.join(ROOT, "bench", "apps")
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
PATH = "/static/site.css"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv):
    return subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=APPS)


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def fetch(port):
    r = subprocess.run(["curl", "-s", "-D", "-", "http://127.0.0.1:%d%s" % (port, PATH)], capture_output=True)
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def wait_200(port):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        head, _ = fetch(port)
        if head.startswith("HTTP/1.1 200"):
            return
        time.sleep(0.02)
    raise RuntimeError("no 200 on port %d" % port)


def embedded(d, static, server=SERVER, name="deployctl-server --static"):
    port = free_port()
    p = spawn([server, "hello:app", "--bind", "127.0.0.1:%d" % port, "--chdir", APPS, "--workers", "1",
               "--static", "/static/:7d=" + static])
    return name, [p], port


def nginx(d, static):
    port = free_port()
    conf = """daemon off; master_process off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 4096; }
http { access_log off; sendfile on; tcp_nopush on; server_tokens off; include /etc/nginx/mime.types;
  default_type application/octet-stream; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p;
  uwsgi_temp_path %(d)s/u; fastcgi_temp_path %(d)s/f; scgi_temp_path %(d)s/s;
  server { listen 127.0.0.1:%(port)d;
    add_header X-Content-Type-Options nosniff always; add_header X-Frame-Options SAMEORIGIN always;
    add_header Referrer-Policy strict-origin-when-cross-origin always;
    add_header Cross-Origin-Opener-Policy same-origin always;
    location /static/ { alias %(static)s/; expires 604800s; } } }
""" % {"d": d, "port": port, "static": static}
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    p = spawn(["nginx", "-p", d, "-c", "nginx.conf"])
    return "nginx alias", [p], port


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    v = float(m.group(1))
    return {"us": v / 1000, "ms": v, "s": v * 1000}[m.group(2)]


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", "-d%ds" % seconds, "--latency",
                          "http://127.0.0.1:%d%s" % (port, PATH)], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p50": p50, "p99": p99, "errors": errors}


def main():
    d = tempfile.mkdtemp(prefix="bench-static-")
    static = os.path.join(d, "static")
    os.mkdir(static)
    with open(os.path.join(static, "site.css"), "w") as f:
        f.write(("body { margin: 0 auto; max-width: 40em; font-family: sans-serif; }\n" * 32)[:2048])
    stacks = []
    try:
        makers = [embedded, nginx]
        baseline = os.environ.get("BENCH_BASELINE")
        if baseline:
            makers.append(lambda d, st: embedded(d, st, baseline, "deployctl-server --static (BENCH_BASELINE)"))
        for make in makers:
            sub = tempfile.mkdtemp(prefix="stack-", dir=d)
            name, procs, port = make(sub, static)
            stacks.append({"name": name, "procs": procs, "port": port, "runs": []})
            wait_200(port)
        answers = [fetch(s["port"]) for s in stacks]
        for (head, body), s in zip(answers, stacks):
            assert body == answers[0][1], "%s: other bytes" % s["name"]
            assert head.lower().count("cache-control: max-age=604800") == 1, "%s: %s" % (s["name"], head)
        for s in stacks:  # warm-up
            wrk(s["port"], 2)
        for _ in range(ROUNDS):
            for s in stacks:
                s["runs"].append(wrk(s["port"], SECONDS))
    finally:
        for s in stacks:
            for p in reversed(s["procs"]):
                stop(p)
    print("\n## a 2 KiB static file, keep-alive (wrk -t1 -c64), %d x %d s" % (ROUNDS, SECONDS))
    print("| server | median req/s | ours ÷ this | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    first = None
    for s in stacks:
        rps = statistics.median(r["rps"] for r in s["runs"])
        first = first or rps
        print("| %s | %.0f | %.2f× | %.2f | %.2f | %d |" % (
            s["name"], rps, first / rps, statistics.median(r["p50"] for r in s["runs"]),
            statistics.median(r["p99"] for r in s["runs"]), sum(r["errors"] for r in s["runs"])))


if __name__ == "__main__":
    sys.exit(main())
