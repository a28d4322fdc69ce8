#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer on 127.0.0.1 for `make test-services`.
# Starts them when installed but stopped; installs them from Debian's packages when
# missing and we are root (as in CI). Never touches a server that already answers.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "services-up: $* missing; install it (Debian: apt-get install $*)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

postgres_ready() { have pg_isready && pg_isready -q -h 127.0.0.1 -p 5432; }
redis_ready() { have redis-cli && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

if ! postgres_ready; then
    have pg_ctlcluster || apt_install postgresql
    version=$(ls /etc/postgresql | sort -n | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do postgres_ready && break; sleep 1; done
    postgres_ready || { echo "services-up: PostgreSQL did not start" >&2; exit 1; }
fi

if ! redis_ready; then
    have redis-server || apt_install redis-server
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do redis_ready && break; sleep 1; done
    redis_ready || { echo "services-up: Redis did not start" >&2; exit 1; }
fi

# Tests connect as `postgres` without a password (trust on loopback), as on our CI machines.
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null
echo "services-up: PostgreSQL and Redis are answering"
