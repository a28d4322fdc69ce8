#!/usr/bin/env bash
# Make sure coturn is there for the call tests (the turn_server fixture in conftest.py, which
# starts its own turnserver on 127.0.0.1 with a throwaway config). Installs it from Debian's
# packages when missing and we are root (as in CI); the package's own service is not used.
set -euo pipefail

TURNSERVER=${TURNSERVER:-turnserver}
if command -v "$TURNSERVER" >/dev/null 2>&1 || [ -x /usr/sbin/turnserver ] || [ -x /usr/bin/turnserver ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "turn-up: turnserver missing; install it (Debian: apt-get install coturn)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null
command -v turnserver || ls /usr/sbin/turnserver /usr/bin/turnserver 2>/dev/null
