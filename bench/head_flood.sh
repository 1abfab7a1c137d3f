#!/usr/bin/env bash
# Worker RSS under 1,000 connections sending ~800 KB request heads at once: deployctl
# (--workers 1 --threads 1) against Gunicorn gthread and Granian, same run.
#   bash bench/head_flood.sh
#   BENCH_CONNS=200 BENCH_ONLY=gunicorn bash bench/head_flood.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
# One descriptor per connection on the client side (the servers raise their own limits).
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 4096 ] || ulimit -n "$(ulimit -Hn)"
exec .bench/venv/bin/python bench/head_flood.py "$@"
