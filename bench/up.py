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


def with_up(target, port):
    t0 = time.monotonic()
    subprocess.run([DEPLOYCTL, "up", "-c", os.path.join(EXAMPLE, "deploy.toml"), "--target", target,
                    "--listen", "127.0.0.1:%d" % port, "--detach", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    took = (time.monotonic() - t0) * 1000
    subprocess.run([DEPLOYCTL, "down", "-c", os.path.join(EXAMPLE, "deploy.toml"), "--quiet"], check=True)
    return took


def by_hand(target, port):
    """The same stack from the configs the `up` run just rendered (same port), started
    directly: backend until READY=1, nginx, then GET / until 200."""
    run = os.path.join(EXAMPLE, ".deployctl", target)
    venv = os.path.join(EXAMPLE, ".venv")
    sock = os.path.join(run, "flask-hello.sock")
    behind = target.startswith("nginx+")
    backend = target.split("+")[-1]
    tmp = tempfile.mkdtemp(prefix="bench-up-")
    notify = os.path.join(tmp, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify)
    ns.settimeout(60)
    env = dict(os.environ, NOTIFY_SOCKET=notify)
    bind = "unix:" + sock if behind else "127.0.0.1:%d" % port
    if backend == "embedded":
        argv = [SERVER, "--config", os.path.join(EXAMPLE, "deploy.toml"), "--bind", bind]
    elif backend == "gunicorn":
        argv = [os.path.join(venv, "bin", "gunicorn"), "--config", os.path.join(run, "conf/gunicorn/gunicorn.conf.py")]
    else:
        argv = ["/usr/bin/uwsgi", "--ini", os.path.join(run, "conf/uwsgi/flask-hello.ini"),
                "--socket" if behind else "--http-socket", sock if behind else bind]
    if behind and os.path.exists(sock):
        os.unlink(sock)
    t0 = time.monotonic()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True, cwd=EXAMPLE)]
    try:
        while b"READY=1" not in ns.recv(512):
            pass
        if behind:
            procs.append(subprocess.Popen(["nginx", "-p", os.path.join(run, "nginx"), "-c", "nginx.conf"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
        ok = healthy(port, time.monotonic() + 60)
        took = (time.monotonic() - t0) * 1000
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, 15)
                p.wait(timeout=30)
            except ProcessLookupError:
                pass
        ns.close()
    if not ok:
        raise RuntimeError("by-hand %s never healthy" % target)
    return took


def main():
    print("## time to healthy, Flask example, virtualenv present (%d runs, medians)" % ROUNDS)
    print("| target | deployctl up --detach (renders, validates, starts, health + static check) "
          "| by hand, same configs (start, READY=1, nginx, GET /) | ratio |")
    print("|---|---|---|---|")
    for target in ("embedded", "nginx+embedded", "gunicorn", "nginx+gunicorn", "uwsgi", "nginx+uwsgi"):
        ups, hands = [], []
        for _ in range(ROUNDS):
            port = free_port()
            ups.append(with_up(target, port))
            hands.append(by_hand(target, port))
        u, h = statistics.median(ups), statistics.median(hands)
        print("| %s | %.0f ms | %.0f ms | %.2f× |" % (target, u, h, u / h), flush=True)


if __name__ == "__main__":
    sys.exit(main())
