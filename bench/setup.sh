#!/usr/bin/env bash
# What the benchmarks need: wrk, nginx and libev-dev (for bjoern) from apt; the peers
# (Granian, bjoern, Gunicorn, uWSGI, waitress) and Flask in .bench/venv; the release server.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
command -v nginx >/dev/null || need_apt+=(nginx)
[ -e /usr/include/ev.h ] || need_apt+=(libev-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! .bench/venv/bin/python -c 'import granian, bjoern, gunicorn, flask, waitress' 2>/dev/null || [ ! -x .bench/venv/bin/uwsgi ]; then
  python3 -m venv .bench/venv
  .bench/venv/bin/pip install -q --disable-pip-version-check granian bjoern gunicorn uwsgi flask waitress
fi
cargo build --release -q -p deployctl-server
