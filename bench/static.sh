#!/usr/bin/env bash
# Issue 15's static-file measure: a small file from the embedded server (`--static`, on its I/O
# thread) against nginx serving the same file (`alias`, as the nginx site does), same run.
# BENCH_SECONDS / BENCH_ROUNDS as for bench/wsgi.sh. Needs only the release server, nginx and
# wrk (no benchmark virtualenv: the app is never called).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p deployctl-server
exec python3 bench/static.py "$@"
