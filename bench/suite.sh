#!/usr/bin/env bash
# Every throughput measure against every peer in one run, and the targets checked (see
# bench/suite.py). Installs the peers into .bench/venv and wrk, nginx, libev-dev from apt.
#   bash bench/suite.sh            # medians of 3 x 10 s (about 25 minutes)
#   bash bench/suite.sh --short    # 1 x 3 s, a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
bash bench/setup.sh
exec .bench/venv/bin/python bench/suite.py "$@"
