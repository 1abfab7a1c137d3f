#!/usr/bin/env bash
# Time from `deployctl up` to healthy, against the same stack started by hand (issue 5).
#   BENCH_ROUNDS=5 bash bench/up.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release -q
export PATH="$PWD/.tools/venv/bin:$PATH"
exec python3 bench/up.py "$@"
