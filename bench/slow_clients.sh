#!/usr/bin/env bash
# Probe latency while 50 trickling uploads and 50 non-reading downloads hold one worker:
# deployctl (--workers 1 --threads 1) against Gunicorn, Granian and bjoern, same run.
#   bash bench/slow_clients.sh                       # 20 s idle + 20 s hostile per server
#   BENCH_SECONDS=5 BENCH_ONLY=granian bash bench/slow_clients.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
exec .bench/venv/bin/python bench/slow_clients.py "$@"
