#!/usr/bin/env bash
# The embedded server against its peers, one worker each, same run (issue 3's measures).
#   bash bench/wsgi.sh            # 3 x 10 s per server and endpoint, after a 2 s warm-up
#   BENCH_SECONDS=3 BENCH_ROUNDS=1 bash bench/wsgi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
exec .bench/venv/bin/python bench/wsgi.py "$@"
