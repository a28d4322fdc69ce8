"""Shared fixtures: live Daphne servers and a real Celery worker as subprocesses.

The same suite runs on the embedded default (`make test`: SQLite file database,
in-memory channel layer, eager Celery) and on the real parts (`make test-services`:
PostgreSQL, Redis, a Celery worker process). Subprocesses get the test database
through DATABASE_URL, so tests that talk to them use ``transactional_db``.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.db import connection

ROOT = Path(__file__).resolve().parent
SERVICES_MODE = bool(os.environ.get("REDIS_URL"))


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Lockout counters and throttles live in the cache: start every test clean."""
    cache.clear()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_database_url() -> str:
    """DATABASE_URL of the test database that pytest-django created."""
    params = connection.settings_dict
    if params["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or ""
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{params['PORT']}" if params.get("PORT") else ""
    return f"postgres://{auth}{params.get('HOST') or '127.0.0.1'}{port}/{params['NAME']}"


def subprocess_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "DJANGO_SETTINGS_MODULE"}
    }
    env.update(
        DJANGO_ENV="test",
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=test_database_url(),
        PYTHONUNBUFFERED="1",
        # Lockouts and throttles are per process in the embedded default; the tests
        # that check them run in-process, so live servers get generous limits.
        THROTTLE_ANON="10000/min",
        THROTTLE_USER="10000/min",
        THROTTLE_AUTH="10000/min",
        LOGIN_ADDRESS_FAILURES="10000",
    )
    return env


@dataclass
class LiveServer:
    url: str
    ws_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_http(
    url: str, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text(errors='replace')}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server did not start:\n{log_path.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_for_other_database_sessions_to_end(timeout: float = 10) -> None:
    """A stopped subprocess's PostgreSQL session lingers for a moment; dropping the test
    database while it does fails, so wait for it."""
    if connection.vendor != "postgresql":
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def start_daphne(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], LiveServer]]:
    """Start Daphne processes serving config.asgi on the test database."""
    started: list[LiveServer] = []

    def start() -> LiveServer:
        port = free_port()
        log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "--ping-interval", "20", "--ping-timeout", "30", "config.asgi:application"],
                cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", process, log_path)
        started.append(server)
        _wait_http(server.url, process, log_path)
        return server

    yield start
    for server in started:
        _stop(server.process)
    with django_db_blocker.unblock():
        _wait_for_other_database_sessions_to_end()


@pytest.fixture(scope="session")
def daphne_server(start_daphne: Callable[[], LiveServer]) -> LiveServer:
    """One live Daphne server for the session. Use with ``transactional_db``."""
    return start_daphne()


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes] | None]:
    """A real Celery worker on the test database (services mode only; the embedded
    default runs tasks in-process)."""
    if not SERVICES_MODE:
        yield None
        return
    from config.celery import app

    app.control.purge()
    log_path = tmp_path_factory.mktemp("celery") / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", "test@%h"],
            cwd=ROOT, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not app.control.ping(timeout=0.5):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"celery worker did not start:\n{log_path.read_text()}")
    yield process
    _stop(process)
    with django_db_blocker.unblock():
        _wait_for_other_database_sessions_to_end()


@pytest.fixture(autouse=True, scope="session")
def _celery_worker_for_services(request: pytest.FixtureRequest) -> None:
    """In services mode every task goes to the real worker, so start it for the session."""
    if SERVICES_MODE:
        request.getfixturevalue("celery_worker_process")


def wait_until(predicate: Callable[[], object], timeout: float = 15, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting: {message}")


@pytest.fixture
def services_mode() -> bool:
    return SERVICES_MODE


__all__ = ["SERVICES_MODE", "LiveServer", "settings", "wait_until"]
