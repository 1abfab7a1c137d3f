"""Issue 14's TLS measures, one worker each, pinned (server, and nginx with it, on CPU 0; wrk on
CPU 1), the raw WSGI hello world, the same P-256 certificate, TLS 1.3 as wrk's OpenSSL
negotiates it:

- requests/s over keep-alive TLS (`wrk -t1 -c64`, connections made once);
- full handshakes/s (`wrk -t1 -c16` with `Connection: close`: every request a new TCP
  connection and a full handshake; no server here resumes sessions: the embedded server has
  no tickets and no cache, nginx is told `ssl_session_tickets off` and has no cache, Granian's
  rustls keeps a session cache but wrk never offers a session).

Servers: deployctl-server `--certfile/--keyfile`; Granian `--ssl-certificate/--ssl-keyfile`
(1 worker, 1 blocking thread, its fastest WSGI setting per BENCHMARKS.md); nginx (one worker,
TLS, Mozilla intermediate as deployctl renders it) proxying to deployctl-server on a unix
socket (keepalive 128). Medians of ROUNDS runs, alternating; ratios against the first row.

Run through bench/tls.sh.
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wsgi as base  # noqa: E402  (same directory)

VENV = base.VENV
APPS = base.APPS
SERVER = base.SERVER


def make_pair(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key,
         "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return cert, key


def first_200_tls(port, deadline):
    while time.monotonic() < deadline:
        r = subprocess.run(["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "https://127.0.0.1:%d/" % port],
                           capture_output=True, text=True)
        if r.stdout == "200":
            return True
        time.sleep(0.01)
    return False


class Stack:
    def __init__(self, name, procs, port):
        self.name, self.procs, self.port, self.runs = name, procs, port, {"keepalive": [], "handshakes": []}
        if not first_200_tls(port, time.monotonic() + 30):
            self.stop()
            raise RuntimeError("%s did not answer over TLS" % name)

    def stop(self):
        for p in reversed(self.procs):
            base.stop(p)


def spawn(argv):
    return subprocess.Popen(["taskset", "-c", "0"] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, cwd=APPS)


def embedded(module, cert, key, d):
    port = base.free_port()
    p = spawn([SERVER, module + ":app", "--bind", "127.0.0.1:%d" % port, "--chdir", APPS, "--venv", VENV,
               "--certfile", cert, "--keyfile", key])
    return Stack("deployctl-server, rustls", [p], port)


def granian(module, cert, key, d):
    port = base.free_port()
    p = spawn([os.path.join(VENV, "bin", "granian"), "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--blocking-threads", "1", "--working-dir", APPS, "--log-level", "warning",
               "--ssl-certificate", cert, "--ssl-keyfile", key, module + ":app"])
    return Stack("granian, 1 blocking thread, TLS", [p], port)


def nginx(module, cert, key, d):
    port = base.free_port()
    sock = os.path.join(d, "app.sock")
    app = spawn([SERVER, module + ":app", "--bind", "unix:" + sock, "--chdir", APPS, "--venv", VENV])
    deadline = time.monotonic() + 30
    while not os.path.exists(sock) and time.monotonic() < deadline:
        time.sleep(0.01)
    conf = """daemon off; master_process off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p; uwsgi_temp_path %(d)s/u;
  fastcgi_temp_path %(d)s/f; scgi_temp_path %(d)s/s;
  upstream app { server unix:%(sock)s; keepalive 128; }
  server { listen 127.0.0.1:%(port)d ssl; ssl_certificate %(cert)s; ssl_certificate_key %(key)s;
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_tickets off; ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    ssl_prefer_server_ciphers on;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; } } }
""" % {"d": d, "sock": sock, "port": port, "cert": cert, "key": key}
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    ngx = spawn(["nginx", "-p", d, "-c", "nginx.conf"])
    return Stack("nginx TLS → deployctl-server (unix socket)", [app, ngx], port)


def wrk(port, seconds, close):
    args = ["taskset", "-c", "1", "wrk", "-t1", "-c16" if close else "-c64", "-d%ds" % seconds, "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run(args + ["https://127.0.0.1:%d/" % port], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = base.to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p99": p99, "errors": errors}


def main():
    module = "hello"
    d = tempfile.mkdtemp(prefix="bench-tls-")
    cert, key = make_pair(d)
    stacks = []
    try:
        for make in (embedded, granian, nginx):
            sub = tempfile.mkdtemp(prefix="stack-", dir=d)
            stacks.append(make(module, cert, key, sub))
        for s in stacks:  # warm-up
            wrk(s.port, 2, False)
            wrk(s.port, 2, True)
        for _ in range(base.ROUNDS):
            for s in stacks:
                s.runs["keepalive"].append(wrk(s.port, base.SECONDS, False))
                s.runs["handshakes"].append(wrk(s.port, base.SECONDS, True))
    finally:
        for s in stacks:
            s.stop()
    for kind, title in (("keepalive", "requests/s over keep-alive TLS (wrk -t1 -c64)"),
                        ("handshakes", "full TLS handshakes/s (wrk -t1 -c16, Connection: close)")):
        print("\n## %s, raw WSGI hello, %d x %d s" % (title, base.ROUNDS, base.SECONDS))
        print("| server | median | vs first row | p99 ms | errors |")
        print("|---|---|---|---|---|")
        first = None
        for s in stacks:
            runs = s.runs[kind]
            rps = statistics.median(r["rps"] for r in runs)
            first = first or rps
            print("| %s | %.0f | %.2f× | %.2f | %d |" % (s.name, rps, first / rps, statistics.median(r["p99"] for r in runs),
                                                       sum(r["errors"] for r in runs)))


if __name__ == "__main__":
    main()
