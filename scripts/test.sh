#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (a virtualenv with
# the Python packages; Debian's chromium, firefox-esr, WebKitGTK's driver, Xvfb,
# ffmpeg, nginx and nats-server), then runs the
# linters and the whole test suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium, firefox-esr and WebKitGTK (webkit2gtk-driver, under xvfb: the
# page tests run in all three engines), ffmpeg (a consumer of the stream, and the
# check that recordings play), nginx (the reverse-proxy tests), nats-server (an
# origin and its edges) and faketime (libfaketime: the wall clock jumped under a
# running server).
missing=""
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/firefox-esr ] || missing="$missing firefox-esr"
[ -x /usr/bin/WebKitWebDriver ] || missing="$missing webkit2gtk-driver"
[ -x /usr/bin/Xvfb ] || missing="$missing xvfb"
[ -x /usr/bin/ffmpeg ] && [ -x /usr/bin/ffprobe ] || missing="$missing ffmpeg"
[ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || missing="$missing nats-server"
compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null || missing="$missing faketime"
command -v systemd-analyze >/dev/null || missing="$missing systemd"  # checks the kiosk's unit
if [ -n "$missing" ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "installing Debian's$missing for the tests" >&2
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $missing >/dev/null
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .

# On parallel workers (pytest-xdist): the tests mostly wait on browsers, sockets and
# frames, so more workers than cores pay (on 2 cores: 3 workers ~450 s, 4 ~390 s, 5 no
# faster than 4; serially ~860 s).  --dist worksteal gives each worker a run of
# consecutive tests (a module's browser and servers are started once per worker, not
# per test) and moves tests to a worker that runs out.  A test marked "alone" (it
# measures rates or times) runs while no other does (tests/conftest.py).
# CAMSTREAM_TEST_WORKERS=0 runs the suite in this one process.
workers="${CAMSTREAM_TEST_WORKERS:-4}"
parallel=()
if [ "$workers" != 0 ]; then
    parallel=(-n "$workers" --dist worksteal)
fi
set +e
.venv/bin/python -m pytest "${parallel[@]}" "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
