#!/usr/bin/env bash
# The embedded server against its peers, one process each, same run (issue 3's measures).
#   bash bench/wsgi.sh            # 3 x 10 s per server and endpoint, after a 2 s warm-up
#   BENCH_SECONDS=3 bash bench/wsgi.sh
# Installs wrk and libev-dev (for bjoern) with apt, and the peers into .bench/venv.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
[ -e /usr/include/ev.h ] || need_apt+=(libev-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! .bench/venv/bin/python -c 'import granian, bjoern, gunicorn, flask' 2>/dev/null; then
  python3 -m venv .bench/venv
  .bench/venv/bin/pip install -q --disable-pip-version-check granian bjoern gunicorn flask
fi
cargo build --release -q -p deployctl-server
exec .bench/venv/bin/python bench/wsgi.py "$@"
