"""Issue 4's measures: two workers against Gunicorn, uWSGI and Granian (two workers each), and
the stacks behind nginx over a unix socket: nginx+embedded over HTTP and over uwsgi, against
nginx+uWSGI (`uwsgi_pass`) and nginx+Gunicorn (`proxy_pass`).

`stacks.sh targets` (issue 13): every front target as `deployctl up` runs it (its rendered
configs, the Flask example's /json), the Apache ones next to the nginx ones, with 64 and 512
connections: nginx+apache+mod_wsgi against apache+mod_wsgi is the layout's case.

Two workers: no pinning, `wrk -t2 -c128` (wrk shares the two cores with the servers; that is
said next to the figures). Behind nginx: one nginx worker and the app server on CPU 0, wrk on
CPU 1, upstream keep-alive 128 for HTTP upstreams. Medians of ROUNDS runs, alternating.

Run through bench/stacks.sh.
"""

import os
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


def two_worker_servers(module, port):
    bind = "127.0.0.1:%d" % port
    b = os.path.join(VENV, "bin")
    return {
        "deployctl, 2 workers": [SERVER, module + ":app", "--bind", bind, "--chdir", APPS, "--venv", VENV,
                                 "--workers", "2"],
        "granian, 2 workers x 1 blocking thread": [
            b + "/granian", "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
            "--blocking-threads", "1", "--working-dir", APPS, "--log-level", "warning", module + ":app"],
        "uwsgi, master + 2 processes": [
            b + "/uwsgi", "--master", "--processes", "2", "--http11-socket", bind, "--chdir", APPS,
            "--module", module + ":app", "--virtualenv", VENV, "--disable-logging", "--die-on-term", "--listen", "1024"],
        "gunicorn sync, 2 workers": [b + "/gunicorn", "-w", "2", "-b", bind, "--chdir", APPS, "--log-level",
                                     "warning", module + ":app"],
    }


def run_group(title, make, path, wrk_args, pin_server):
    print("\n## %s %s (%d x %d s, %s)" % (title, path, base.ROUNDS, base.SECONDS, " ".join(wrk_args)), flush=True)
    running = {}
    for name in make(0):
        port = base.free_port()
        argv = make(port)[name]
        p, startup = start(argv, port, path, pin_server)
        running[name] = {"proc": p, "port": port, "startup_ms": startup, "runs": []}
    try:
        for r in running.values():
            wrk(r["port"], path, 2, wrk_args)
        for _ in range(base.ROUNDS):
            for r in running.values():
                r["runs"].append(wrk(r["port"], path, base.SECONDS, wrk_args))
    finally:
        for r in running.values():
            base.stop(r["proc"])
    rows = [(name, statistics.median(x["rps"] for x in r["runs"]), statistics.median(x["p99"] for x in r["runs"]),
             sum(x["errors"] for x in r["runs"]), r["startup_ms"]) for name, r in running.items()]
    ours = rows[0][1]
    print("| stack | req/s (median) | vs first row | p99 ms | errors | start→200 ms |")
    print("|---|---|---|---|---|---|")
    for name, rps, p99, errors, startup in rows:
        print("| %s | %.0f | %.2f× | %.2f | %d | %.0f |" % (name, rps, ours / rps, p99, errors, startup))
    return [{"server": name, "rps": rps, "p99": p99, "errors": errors, "startup_ms": startup}
            for name, rps, p99, errors, startup in rows]


def start(argv, port, path, pin):
    t0 = time.monotonic()
    cmd = (["taskset", "-c", "0"] if pin else []) + argv
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=APPS)
    if not base.first_200(port, path, time.monotonic() + 30):
        base.stop(p)
        raise RuntimeError("no 200 from %s" % argv)
    return p, (time.monotonic() - t0) * 1000


def wrk(port, path, seconds, wrk_args):
    import re
    out = subprocess.run(
        wrk_args[:-1] + ["-d%ds" % seconds, "--latency", "http://127.0.0.1:%d%s" % (port, path)],
        capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = base.to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p99": p99, "errors": errors}


class NginxStack:
    """An app server on a unix socket behind one pinned nginx worker on 127.0.0.1:port."""

    def __init__(self, name, app_argv, sock, mode, port, tmp):
        self.name, self.port = name, port
        d = tmp
        if mode == "uwsgi":
            loc = "include /etc/nginx/uwsgi_params; uwsgi_pass unix:%s;" % sock
            upstream = ""
        else:
            loc = ("proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
                   "proxy_set_header Host $host;")
            upstream = "upstream app { server unix:%s; keepalive 128; }" % sock
        conf = """daemon off; master_process off; worker_processes 1; pid %(d)s/nginx.pid; error_log %(d)s/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path %(d)s/b; proxy_temp_path %(d)s/p; uwsgi_temp_path %(d)s/u;
  fastcgi_temp_path %(d)s/f; scgi_temp_path %(d)s/s; %(upstream)s
  server { listen 127.0.0.1:%(port)d; location / { %(loc)s } } }
""" % {"d": d, "upstream": upstream, "port": port, "loc": loc}
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(conf)
        self.app = subprocess.Popen(["taskset", "-c", "0"] + app_argv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, cwd=APPS)
        deadline = time.monotonic() + 30
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.nginx = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", d, "-c", "nginx.conf"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not base.first_200(port, "/", time.monotonic() + 30):
            self.stop()
            raise RuntimeError("stack %s did not answer" % name)

    def stop(self):
        base.stop(self.nginx)
        base.stop(self.app)


def nginx_group(module, path):
    print("\n## behind nginx: %s %s (%d x %d s, wrk -t1 -c64 on CPU 1, nginx + app on CPU 0)"
          % (module, path, base.ROUNDS, base.SECONDS), flush=True)
    b = os.path.join(VENV, "bin")
    stacks = []
    specs = [
        ("nginx → deployctl, HTTP (proxy_pass, keepalive 128)", "http",
         lambda s: [SERVER, module + ":app", "--bind", "unix:" + s, "--chdir", APPS, "--venv", VENV, "--workers", "1"]),
        ("nginx → deployctl, uwsgi (uwsgi_pass)", "uwsgi",
         lambda s: [SERVER, module + ":app", "--bind", "unix:" + s, "--chdir", APPS, "--venv", VENV, "--workers", "1",
                    "--protocol", "uwsgi"]),
        ("nginx → uWSGI (uwsgi_pass)", "uwsgi",
         lambda s: [b + "/uwsgi", "--master", "--processes", "1", "--socket", s, "--chdir", APPS, "--module",
                    module + ":app", "--virtualenv", VENV, "--disable-logging", "--die-on-term", "--listen", "1024"]),
        ("nginx → Gunicorn sync (proxy_pass)", "http",
         lambda s: [b + "/gunicorn", "-w", "1", "-b", "unix:" + s, "--chdir", APPS, "--log-level", "warning",
                    module + ":app"]),
    ]
    try:
        for name, mode, argv in specs:
            tmp = tempfile.mkdtemp(prefix="bench-nginx-")
            sock = os.path.join(tmp, "app.sock")
            stacks.append((NginxStack(name, argv(sock), sock, mode, base.free_port(), tmp), []))
        for st, _ in stacks:
            base.wrk(st.port, path, 2)
        for _ in range(base.ROUNDS):
            for st, runs in stacks:
                runs.append(base.wrk(st.port, path, base.SECONDS))
    finally:
        for st, _ in stacks:
            st.stop()
    ours = statistics.median(x["rps"] for x in stacks[0][1])
    print("| stack | req/s (median) | vs first row | p99 ms | errors |")
    print("|---|---|---|---|---|")
    rows = []
    for st, runs in stacks:
        rps = statistics.median(x["rps"] for x in runs)
        p99 = statistics.median(x["p99"] for x in runs)
        errors = sum(x["errors"] for x in runs)
        print("| %s | %.0f | %.2f× | %.2f | %d |" % (st.name, rps, ours / rps, p99, errors))
        rows.append({"server": st.name, "rps": rps, "p99": p99, "errors": errors})
    return rows


# The targets as `deployctl up` runs them (issue 13): the Apache ones next to the nginx ones.
UP_TARGETS = ["nginx+embedded", "nginx+gunicorn", "nginx+uwsgi", "apache+embedded", "apache+gunicorn",
              "apache+uwsgi", "apache+mod_wsgi", "nginx+apache+mod_wsgi"]
DEPLOYCTL = os.path.join(base.ROOT, "target", "release", "deployctl")
EXAMPLE = os.path.join(base.ROOT, "examples", "flask-hello")


def example_copy():
    """The Flask example in a directory Apache's children (www-data, when run as root) can
    read, its virtualenv the example's."""
    import shutil
    d = tempfile.mkdtemp(prefix="bench-targets-")
    os.chmod(d, 0o755)
    for f in ("app.py", "requirements.txt"):
        shutil.copy(os.path.join(EXAMPLE, f), d)
    shutil.copytree(os.path.join(EXAMPLE, "static"), os.path.join(d, "static"))
    with open(os.path.join(EXAMPLE, "deploy.toml")) as f:
        toml = f.read().replace('venv = ".venv"', 'venv = "%s"' % os.path.join(EXAMPLE, ".venv"))
    with open(os.path.join(d, "deploy.toml"), "w") as f:
        f.write(toml)
    return d


def targets_group(path="/json"):
    """Each target started by `deployctl up --detach` from the example's deploy.toml (its
    `workers = "auto"`: two on this machine, two mod_wsgi daemon processes), then `wrk -t2`
    with 64 and 512 connections against each, rounds alternating; `deployctl down` after."""
    project = example_copy()
    config = os.path.join(project, "deploy.toml")
    env = dict(os.environ, NO_COLOR="1")
    started = []
    try:
        for target in UP_TARGETS:
            port = base.free_port()
            subprocess.run([DEPLOYCTL, "up", "--detach", "-q", "-c", config, "-t", target, "--listen",
                            "127.0.0.1:%d" % port], check=True, env=env, stdout=subprocess.DEVNULL)
            started.append((target, port))
        tables = []
        for clients in (64, 512):
            args = ["wrk", "-t2", "-c%d" % clients, "-dX"]
            print("\n## deployctl up, every target: flask-hello %s (%d x %d s, wrk -t2 -c%d, unpinned)"
                  % (path, base.ROUNDS, base.SECONDS, clients), flush=True)
            runs = {t: [] for t, _ in started}
            for _, port in started:
                wrk(port, path, 2, args)
            for _ in range(base.ROUNDS):
                for target, port in started:
                    runs[target].append(wrk(port, path, base.SECONDS, args))
            first = statistics.median(x["rps"] for x in runs[started[0][0]])
            print("| target | req/s (median) | vs first row | p99 ms | errors |")
            print("|---|---|---|---|---|")
            for target, _ in started:
                rps = statistics.median(x["rps"] for x in runs[target])
                p99 = statistics.median(x["p99"] for x in runs[target])
                errors = sum(x["errors"] for x in runs[target])
                print("| `%s` | %.0f | %.2f× | %.2f | %d |" % (target, rps, first / rps, p99, errors), flush=True)
                tables.append({"target": target, "clients": clients, "rps": rps, "p99": p99, "errors": errors})
        return tables
    finally:
        for target, _ in started:
            subprocess.run([DEPLOYCTL, "down", "-q", "-c", config, "-t", target], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main():
    if sys.argv[1:] == ["targets"]:
        targets_group()
        return 0
    wrk2 = ["wrk", "-t2", "-c128", "-dX"]
    for module, path in (("hello", "/"), ("flask_app", "/")):
        run_group("two workers, no pinning: " + module, lambda port, m=module: two_worker_servers(m, port), path,
                  wrk2, False)
    for module, path in (("hello", "/"), ("flask_app", "/")):
        nginx_group(module, path)


if __name__ == "__main__":
    sys.exit(main())
