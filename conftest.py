"""Shared fixtures: live Daphne servers and a real Celery worker as subprocesses.

The same suite runs on the embedded default (`make test`: SQLite file database,
in-memory channel layer, eager Celery) and on the real parts (`make test-services`:
PostgreSQL, Redis, a Celery worker process). Subprocesses get the test database
through DATABASE_URL, so tests that talk to them use ``transactional_db``.
"""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from common.testing import (
    ROOT,
    SERVICES_MODE,
    LiveServer,
    free_port,
    stop_process,
    subprocess_env,
    wait_for_other_database_sessions_to_end,
    wait_http,
)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Lockout counters and throttles live in the cache: start every test clean."""
    cache.clear()


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
        wait_http(server.url, process, log_path)
        return server

    yield start
    for server in started:
        stop_process(server.process)
    with django_db_blocker.unblock():
        wait_for_other_database_sessions_to_end()


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
    stop_process(process)
    with django_db_blocker.unblock():
        wait_for_other_database_sessions_to_end()


@pytest.fixture(autouse=True, scope="session")
def _celery_worker_for_services(request: pytest.FixtureRequest) -> None:
    """In services mode every task goes to the real worker, so start it for the session."""
    if SERVICES_MODE:
        request.getfixturevalue("celery_worker_process")


@pytest.fixture
def services_mode() -> bool:
    return SERVICES_MODE
