#!/usr/bin/env bash
# Two workers against Gunicorn, uWSGI and Granian; the stacks behind nginx over a unix
# socket (issue 4's measures).   BENCH_SECONDS / BENCH_ROUNDS as for bench/wsgi.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
exec .bench/venv/bin/python bench/stacks.py "$@"
