"""The ceiling for an app on one core: the app called in a loop in this process, with an
environ like a server's and its response consumed, no sockets and no server. A server that
reached this figure would cost nothing; the gap is what the server (and the kernel's share of
a request) costs.

    python bench/inprocess.py flask_app /        # calls/s, pinned to CPU 0 by the caller
"""

import io
import statistics
import sys
import time


def environ(path):
    return {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "40000", "HTTP_HOST": "bench", "RAW_URI": path,
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
        "wsgi.run_once": False, "wsgi.input_terminated": True,
    }


def calls_per_second(app, path, seconds):
    def start_response(status, headers, exc_info=None):
        return None
    n = 0
    deadline = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while True:
        for _ in range(200):
            result = app(environ(path), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
        n += 200
        if time.perf_counter() >= deadline:
            break
    return n / (time.perf_counter() - t0)


def main():
    module, path = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/apps")
    app = __import__(module).app
    calls_per_second(app, path, 0.5)  # warm-up
    runs = [calls_per_second(app, path, seconds) for _ in range(3)]
    print("%.0f" % statistics.median(runs))


if __name__ == "__main__":
    main()
