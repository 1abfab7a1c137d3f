"""Raw WSGI app for the hostile-client benchmarks (bench/slow_clients.py, bench/head_flood.py).

/        hello world (13 bytes, Content-Length)
/upload  reads exactly CONTENT_LENGTH bytes of the body, answers their count
/big     100 MiB: a generator of 1 MiB chunks (the same bytes object each time, so the app
         itself allocates nothing per chunk)
"""

CHUNK = b"x" * (1 << 20)
BIG_CHUNKS = 100
HELLO = b"Hello, World!"


def _big():
    for _ in range(BIG_CHUNKS):
        yield CHUNK


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/upload":
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
        stream = environ["wsgi.input"]
        got = 0
        while remaining > 0:
            data = stream.read(min(remaining, 65536))
            if not data:
                break
            got += len(data)
            remaining -= len(data)
        body = str(got).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/big":
        start_response("200 OK", [
            ("Content-Type", "application/octet-stream"),
            ("Content-Length", str(len(CHUNK) * BIG_CHUNKS)),
        ])
        return _big()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [HELLO]
