#!/usr/bin/env bash
# Make sure Debian's Chromium is there for the browser tests (tests/browser). Installs it
# from Debian's packages when missing and we are root (as in CI). Playwright drives this
# system browser: never `playwright install`, which downloads one.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "browser-up: $CHROMIUM missing; install it (Debian: apt-get install chromium)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
"$CHROMIUM" --version
