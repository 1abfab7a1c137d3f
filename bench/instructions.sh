#!/usr/bin/env bash
# Instructions per request of the embedded server under callgrind: the request path's
# regression guard, stable on a noisy machine (see bench/instructions.py).
#   bash bench/instructions.sh            # compare with bench/instructions.json (exit 1 if >3 % worse)
#   bash bench/instructions.sh --record   # write the figures (commit them with the change)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || {
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq valgrind >/dev/null
}
bash bench/setup.sh
exec .bench/venv/bin/python bench/instructions.py "$@"
