"""Shared fixtures: live Daphne servers, a real Celery worker and coturn as subprocesses,
and a mail server on loopback that they all send to.

The same suite runs on the embedded default (`make test`: SQLite file database,
in-memory channel layer, eager Celery) and on the real parts (`make test-services`:
PostgreSQL, Redis, a Celery worker process). Subprocesses get the test database
through DATABASE_URL, so tests that talk to them use ``transactional_db``.
"""

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache

from common.testing import (
    ROOT,
    SERVICES_MODE,
    WORKER_VISIBILITY_TIMEOUT_SECONDS,
    CeleryWorker,
    LiveServer,
    SmtpServer,
    free_port,
    live_process_env,
    stop_process,
    wait_for_other_database_sessions_to_end,
    wait_for_worker_idle,
    wait_http,
)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Lockout counters and throttles live in the cache: start every test clean."""
    cache.clear()


@pytest.fixture(autouse=True)
def _no_task_timers_in_the_test_process(settings: Any) -> None:
    """Services called in this process must not leave timer threads behind (ring
    timeouts, email windows); the live servers the tests start keep theirs."""
    settings.TASK_TIMERS_IN_PROCESS = False


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[SmtpServer]:
    """The mail server of the session, on loopback: every live process sends to it."""
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True, scope="session")
def _flush_retried_after_a_deadlock() -> Iterator[None]:
    """On the real parts, a task that a live server scheduled (a ring timeout, a
    notification) may still hold a lock when a test's database is flushed; PostgreSQL
    then breaks the deadlock by failing one side, sometimes the flush. Try it again."""
    if not SERVICES_MODE:
        yield
        return
    from django.core.management.base import CommandError
    from django.core.management.commands import flush
    from django.db import OperationalError

    original = flush.Command.handle

    def handle(self: flush.Command, **options: Any) -> None:
        for attempt in range(5):
            try:
                original(self, **options)
                return
            except CommandError as exc:
                deadlock = isinstance(exc.__cause__, OperationalError) and "deadlock" in str(
                    exc.__cause__
                )
                if not deadlock or attempt == 4:
                    raise
                time.sleep(0.2)

    flush.Command.handle = handle  # type: ignore[method-assign]
    yield
    flush.Command.handle = original  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _worker_idle_after_test() -> Iterator[None]:
    """On the real parts, tasks a test enqueued (after its commits) must be done before
    the test database is flushed, or the flush and a running task deadlock."""
    if not SERVICES_MODE:
        yield
        return
    from celery.signals import before_task_publish

    published: list[str] = []

    def count(sender: str | None = None, **_: Any) -> None:
        published.append(sender or "")

    before_task_publish.connect(count, weak=False)
    try:
        yield
    finally:
        before_task_publish.disconnect(count)
        if published:
            wait_for_worker_idle()


@pytest.fixture(scope="session")
def start_daphne(
    django_db_setup: None,
    django_db_blocker: Any,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., LiveServer]]:
    """Start Daphne processes serving config.asgi on the test database, with the same
    environment as the worker (``live_process_env``). ``start(env=...)`` adds to (or
    overrides) that process's environment, e.g. TURN settings."""
    started: list[LiveServer] = []

    def start(env: Mapping[str, str] | None = None) -> LiveServer:
        port = free_port()
        log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                 "--ping-interval", "20", "--ping-timeout", "30", "config.asgi:application"],
                cwd=ROOT, env={**live_process_env(smtp_server), **(env or {})}, stdout=log,
                stderr=subprocess.STDOUT,
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
def daphne_server(start_daphne: Callable[..., LiveServer]) -> LiveServer:
    """One live Daphne server for the session. Use with ``transactional_db``."""
    return start_daphne()


TURNSERVER = os.environ.get("TURNSERVER", "turnserver")
TURN_RELAY_PORTS = 40


@dataclass
class TurnServer:
    """coturn on loopback (shared RECIPES.md, "TURN"), with coturn's use-auth-secret."""

    port: int
    secret: str
    process: subprocess.Popen[bytes]
    log_path: Path
    min_port: int
    max_port: int

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def daphne_env(self, secret: str | None = None) -> dict[str, str]:
        """What a Daphne needs to hand out credentials for this server (another
        ``secret`` gives credentials coturn refuses)."""
        return {"TURN_URLS": self.url, "TURN_SECRET": self.secret if secret is None else secret}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TurnServer]:
    """A TURN server on 127.0.0.1 for the session (``make turn-up`` installs coturn).
    ``verbose`` makes coturn log each allocation, which the tests look for."""
    binary = shutil.which(TURNSERVER) or shutil.which("turnserver", path="/usr/sbin:/usr/bin")
    if binary is None:
        pytest.fail(f"coturn not found ({TURNSERVER}): `make turn-up` or apt-get install coturn")
    folder = tmp_path_factory.mktemp("turn")
    port = free_port()
    min_port = 49152 + secrets.randbelow(16384 - TURN_RELAY_PORTS)
    max_port = min_port + TURN_RELAY_PORTS - 1
    secret = secrets.token_urlsafe(24)
    log_path = folder / "turn.log"
    config = folder / "turnserver.conf"
    config.write_text(
        "\n".join([
            "listening-ip=127.0.0.1", "relay-ip=127.0.0.1", f"listening-port={port}",
            f"min-port={min_port}", f"max-port={max_port}", "no-tls", "no-dtls", "no-tcp-relay",
            "use-auth-secret", f"static-auth-secret={secret}", "realm=parley.test",
            "fingerprint", "no-cli", "allow-loopback-peers", "no-multicast-peers",
            f"log-file={log_path}", "simple-log", "verbose", f"pidfile={folder / 'turnserver.pid'}",
            f"userdb={folder / 'turndb.sqlite'}",
        ]) + "\n"
    )  # fmt: skip
    with (folder / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [binary, "-c", str(config)], cwd=folder, stdout=out, stderr=subprocess.STDOUT
        )
    server = TurnServer(port, secret, process, log_path, min_port, max_port)
    deadline = time.monotonic() + 15
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"coturn exited early:\n{(folder / 'stdout.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError("coturn did not start listening") from None
            time.sleep(0.05)
    yield server
    stop_process(process)


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None,
    django_db_blocker: Any,
    smtp_server: SmtpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[CeleryWorker | None]:
    """A real Celery worker on the test database (services mode only; the embedded
    default runs tasks in-process). A short visibility timeout hands the task of a
    worker that died to the next one within seconds."""
    if not SERVICES_MODE:
        yield None
        return
    from config.celery import app

    app.control.purge()
    env = {
        **live_process_env(smtp_server),
        "CELERY_VISIBILITY_TIMEOUT": str(WORKER_VISIBILITY_TIMEOUT_SECONDS),
    }
    worker = CeleryWorker(env, tmp_path_factory.mktemp("celery"))
    worker.start()
    yield worker
    worker.stop()
    with django_db_blocker.unblock():
        wait_for_other_database_sessions_to_end()


@pytest.fixture
def celery_worker(celery_worker_process: CeleryWorker | None) -> Iterator[CeleryWorker]:
    """The session's worker, for a test that kills and restarts it (services mode only).
    Whatever the test did, a worker runs again after it for the rest of the session."""
    if celery_worker_process is None:
        pytest.skip("needs a Celery worker process (make test-services)")
    yield celery_worker_process
    celery_worker_process.ensure_running()


@pytest.fixture(autouse=True, scope="session")
def _celery_worker_for_services(request: pytest.FixtureRequest) -> None:
    """In services mode every task goes to the real worker, so start it for the session."""
    if SERVICES_MODE:
        request.getfixturevalue("celery_worker_process")


@pytest.fixture
def services_mode() -> bool:
    return SERVICES_MODE
