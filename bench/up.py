"""Issue 5's measure: time from `deployctl up` to healthy, per target (virtualenv present),
against starting the same stack by hand with the same readiness signal (the server's
READY=1 on a notify socket, then nginx's port, then one health GET).

`deployctl up --detach` returns when the stack is healthy, so its wall time is the figure;
each run is followed by `deployctl down`. Medians of ROUNDS runs, alternating.
"""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "flask-hello")
DEPLOYCTL = os.path.join(ROOT, "target", "release", "deployctl")
SERVER = os.path.join(ROOT, "target", "release", "deployctl-server")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))


def free_port():
    """Not containing "443": gixy (run by `up`) would take the listen for HTTPS."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if "443" not in str(port):
            return port


def healthy(port, deadline):
    req = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(req)
                if s.recv(16).split(b" ")[1:2] == [b"200"]:
                    return True
        except (OSError, IndexError):
            pass
        time.sleep(0.002)
    return False


def with_up(target):
    port = free_port()
    t0 = time.monotonic()
    subprocess.run([DEPLOYCTL, "up", "-c", os.path.join(EXAMPLE, "deploy.toml"), "--target", target,
                    "--listen", "127.0.0.1:%d" % port, "--detach", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    took = (time.monotonic() - t0) * 1000
    subprocess.run([DEPLOYCTL, "down", "-c", os.path.join(EXAMPLE, "deploy.toml"), "--quiet"], check=True)
    return took


def by_hand(target):
    """The same processes, started directly, with the same readiness signals."""
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-up-")
    notify = os.path.join(tmp, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify)
    ns.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    sock = os.path.join(tmp, "app.sock")
    bind = "unix:" + sock if target == "nginx+embedded" else "127.0.0.1:%d" % port
    t0 = time.monotonic()
    app = subprocess.Popen([SERVER, "--config", os.path.join(EXAMPLE, "deploy.toml"), "--bind", bind],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while b"READY=1" not in ns.recv(512):
        pass
    procs = [app]
    if target == "nginx+embedded":
        # As root, nginx's workers would become `nobody`, who cannot reach the socket (as in `up`).
        conf = ("user root;\n" if os.geteuid() == 0 else "") + """daemon off; pid %(t)s/nginx.pid; error_log %(t)s/error.log; events {}
http { access_log off; client_body_temp_path %(t)s/b; proxy_temp_path %(t)s/p; uwsgi_temp_path %(t)s/u;
  fastcgi_temp_path %(t)s/f; scgi_temp_path %(t)s/s; include /etc/nginx/mime.types;
  upstream app { server unix:%(s)s; keepalive 64; }
  server { listen 127.0.0.1:%(p)d; location /static/ { alias %(e)s/static/; expires 7d; }
           location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
""" % {"t": tmp, "s": sock, "p": port, "e": EXAMPLE}
        with open(os.path.join(tmp, "nginx.conf"), "w") as f:
            f.write(conf)
        procs.append(subprocess.Popen(["nginx", "-p", tmp, "-c", "nginx.conf"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True))
    try:
        ok = healthy(port, time.monotonic() + 60)
        took = (time.monotonic() - t0) * 1000
    finally:
        for p in reversed(procs):
            os.killpg(p.pid, 15)
            p.wait(timeout=30)
    ns.close()
    if not ok:
        raise RuntimeError("by-hand stack never healthy")
    return took


def main():
    print("## time to healthy, Flask example, virtualenv present (%d runs, medians)" % ROUNDS)
    print("| target | deployctl up --detach (renders, validates, starts, health + static check) | by hand (start, READY=1, port, GET /) | ratio |")
    print("|---|---|---|---|")
    for target in ("embedded", "nginx+embedded"):
        ups, hands = [], []
        for _ in range(ROUNDS):
            ups.append(with_up(target))
            hands.append(by_hand(target))
        u, h = statistics.median(ups), statistics.median(hands)
        print("| %s | %.0f ms | %.0f ms | %.2f× |" % (target, u, h, u / h), flush=True)


if __name__ == "__main__":
    sys.exit(main())
