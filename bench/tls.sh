#!/usr/bin/env bash
# Issue 14's TLS measures: the embedded server terminating TLS (rustls) against Granian with
# TLS and nginx terminating TLS in front of the embedded server.   BENCH_SECONDS / BENCH_ROUNDS
# as for bench/wsgi.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
exec .bench/venv/bin/python bench/tls.py "$@"
