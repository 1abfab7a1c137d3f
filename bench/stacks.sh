#!/usr/bin/env bash
# Two workers against Gunicorn, uWSGI and Granian; the stacks behind nginx over a unix
# socket (issue 4's measures).   BENCH_SECONDS / BENCH_ROUNDS as for bench/wsgi.sh.
#   bash bench/stacks.sh targets   every front target as `deployctl up` runs it (issue 13): needs
#                                  scripts/setup.sh's tools (Apache, uWSGI, the example's venv)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = targets ]; then
  command -v wrk >/dev/null || { echo "wrk is not installed: bash bench/setup.sh" >&2; exit 1; }
  cargo build --release -q
  export PATH="$PWD/.tools/venv/bin:$PATH"
  exec python3 bench/stacks.py targets
fi
bash bench/setup.sh
exec .bench/venv/bin/python bench/stacks.py "$@"
