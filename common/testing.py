"""Helpers for tests that run the real parts as subprocesses (see conftest.py)."""

import asyncio
import email
import email.policy
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
SERVICES_MODE = bool(os.environ.get("REDIS_URL"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def database_url_for_subprocesses() -> str:
    """DATABASE_URL of the test database that pytest-django created."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
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
        DATABASE_URL=database_url_for_subprocesses(),
        PYTHONUNBUFFERED="1",
        # Lockouts and throttles are per process in the embedded default; the tests
        # that check them run in-process, so live servers get generous limits.
        THROTTLE_ANON="10000/min",
        THROTTLE_USER="10000/min",
        THROTTLE_AUTH="10000/min",
        LOGIN_ADDRESS_FAILURES="10000",
    )
    return env


# The live processes tell people what they missed after this short window (not minutes).
NOTIFY_EMAIL_DELAY_SECONDS = 1
# A task taken by a worker that dies goes back to the queue after this long.
WORKER_VISIBILITY_TIMEOUT_SECONDS = 5
# A delivery whose run died mid-send may be taken over after this long.
DELIVERY_LEASE_SECONDS = 5


def live_process_env(smtp: "SmtpServer") -> dict[str, str]:
    """The environment of the live processes (Daphne and the Celery worker alike): the
    test database, mail to the session's SMTP server, pushes to endpoints on loopback
    (plain HTTP), a short email window and a short delivery lease. No periodic tasks in
    the embedded default's servers, unless a test asks: they would act unasked on what
    other tests look at."""
    return {
        **subprocess_env(),
        "SCHEDULE_IN_PROCESS": "0",
        "EMAIL_URL": smtp.url,
        "NOTIFY_EMAIL_DELAY_SECONDS": str(NOTIFY_EMAIL_DELAY_SECONDS),
        "DELIVERY_LEASE_SECONDS": str(DELIVERY_LEASE_SECONDS),
        "WEB_PUSH_HOSTS": "127.0.0.1",
        "WEB_PUSH_ALLOW_HTTP": "1",
    }


@dataclass
class LiveServer:
    url: str
    ws_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http(
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


def stop_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def close_connections_of_socket_threads() -> None:
    """In-process socket tests run the consumer under channels.testing, which turns off
    closing old connections (to keep a test's transaction): the threads that ran its
    frames keep theirs open, and PostgreSQL would not drop the test database. Each such
    thread closes its own."""
    from asgiref.sync import SyncToAsync

    from realtime.consumers import _frame_threads

    workers = _frame_threads._max_workers
    # Every thread of the pool at once, so that each runs one of these.
    together = threading.Barrier(workers)

    def close_in_frame_thread() -> None:
        connection.close()
        together.wait(timeout=10)

    try:
        for done in [_frame_threads.submit(close_in_frame_thread) for _ in range(workers)]:
            done.result()
    except threading.BrokenBarrierError:  # a thread still busy: say so, and go on
        warnings.warn("a socket frame thread did not close its connection", stacklevel=2)
    # The proxy is read in that thread: its own connection, not this one's.
    SyncToAsync.single_thread_executor.submit(lambda: connection.close()).result()


def wait_for_other_database_sessions_to_end(timeout: float = 10) -> None:
    """A stopped subprocess's PostgreSQL session lingers for a moment; dropping the test
    database while it does fails, so wait for it (this process's own socket threads
    close theirs first)."""
    if connection.vendor != "postgresql":
        return
    close_connections_of_socket_threads()
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
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, client_port, state, backend_start, left(query, 300)"
            " FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        lingering = cursor.fetchall()
    if lingering:  # the database cannot be dropped: say whose sessions kept it
        warnings.warn(f"database sessions still open: {lingering}", stacklevel=2)


def wait_until(predicate: Callable[[], object], timeout: float = 15, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting: {message}")


def database_dump() -> list[bytes]:
    """Every value of every row of every table, as bytes."""
    values: list[bytes] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608  (names from introspection)
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, memoryview | bytes):
                        values.append(bytes(value))
                    elif value is not None:
                        values.append(str(value).encode())
    return values


@dataclass(frozen=True)
class Mail:
    """One message a mail server took: the envelope and the bytes as sent."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)

    def to(self, address: str) -> bool:
        return address.lower() in (rcpt.lower() for rcpt in self.rcpt_tos)


class SmtpServer:
    """A mail server on loopback (aiosmtpd) that keeps each message it accepts.

    ``hold_next(address, when)`` makes the next message to that address (that ``when``
    accepts) wait after its DATA has been sent, before the server answers: the client
    is stuck mid-send until ``release()`` (or until it goes away). A held message is
    never counted as delivered (it is refused with 451 once released); ``held`` lists it."""

    def __init__(self) -> None:
        self.port = free_port()
        self._lock = threading.Lock()
        self._mails: list[Mail] = []
        self._held: list[Mail] = []
        self._hold: Callable[[Mail], bool] | None = None
        self._release: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.holding = threading.Event()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self.release()
        self._controller.stop()

    def mails(self, to: str | None = None) -> list[Mail]:
        with self._lock:
            return [mail for mail in self._mails if to is None or mail.to(to)]

    def held(self, to: str | None = None) -> list[Mail]:
        with self._lock:
            return [mail for mail in self._held if to is None or mail.to(to)]

    def hold_next(self, address: str, when: Callable[[Mail], bool] = lambda mail: True) -> None:
        with self._lock:
            self._hold = lambda mail: mail.to(address) and when(mail)
            self.holding.clear()

    def release(self) -> None:
        with self._lock:
            self._hold = None
            held, self._release = self._release, None
        if held is not None:
            loop, event = held
            loop.call_soon_threadsafe(event.set)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        mail = Mail(
            mail_from=str(envelope.mail_from),
            rcpt_tos=tuple(str(rcpt) for rcpt in envelope.rcpt_tos),
            raw=bytes(envelope.original_content or envelope.content),
        )
        release = asyncio.Event()
        with self._lock:
            hold = self._hold is not None and self._hold(mail)
            if hold:
                self._hold = None
                self._release = (asyncio.get_running_loop(), release)
                self._held.append(mail)
            else:
                self._mails.append(mail)
        if not hold:
            return "250 2.0.0 OK"
        self.holding.set()
        # A client that goes away meanwhile cancels this (aiosmtpd's connection_lost).
        await release.wait()
        return "451 4.3.0 Not taken, try again later"


class CeleryWorker:
    """The session's Celery worker process (services mode). A test may kill it (SIGKILL,
    as a crash would: nothing is acknowledged or rejected) and start another in its
    place; each process logs to its own file and ``log()`` reads them all."""

    def __init__(self, env: Mapping[str, str], folder: Path) -> None:
        self.env = dict(env)
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.log_paths: list[Path] = []
        self._prefix = f"parley-test-{secrets.token_hex(4)}"
        self.name = ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        """Start a worker process and wait until it answers a ping."""
        from config.celery import app

        if self.running:
            raise RuntimeError("the worker is running already")
        number = len(self.log_paths) + 1
        self.name = f"{self._prefix}-{number}@{socket.gethostname()}"
        log_path = self.folder / f"worker-{number}.log"
        self.log_paths.append(log_path)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603  (a fixed command line)
                [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "solo",
                 "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", self.name],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not app.control.ping(destination=[self.name], timeout=0.5):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the worker in whatever it is doing."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def ensure_running(self) -> None:
        if not self.running:
            self.start()

    def log(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.log_paths)


def wait_for_worker_idle(timeout: float = 15) -> None:
    """Until the broker's queue is empty, no worker runs a task, and no task is held by
    a worker that died (tasks the live worker keeps for their countdown do not count;
    those of a dead one come back to the queue after the visibility timeout)."""
    from config.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.connection_for_read() as conn:
            client = conn.default_channel.client  # type: ignore[attr-defined]
            queued = client.llen("celery")
            held = {json.loads(entry)[0]["headers"]["id"] for entry in client.hvals("unacked")}
        inspect = app.control.inspect(timeout=0.5)
        active = inspect.active() or {}
        busy = queued or any(active.values())
        # Only when something is held: asking what the live workers keep takes a second.
        if not busy and (not held or not held - _kept_by_live_workers(inspect)):
            return
        time.sleep(0.1)


def _kept_by_live_workers(inspect: Any) -> set[str]:
    """The ids of the tasks the live workers keep for their countdown (a task reserved
    to run next is not kept: the worker is busy)."""
    kept: set[str] = set()
    for tasks in (inspect.scheduled() or {}).values():
        kept |= {task["request"]["id"] for task in tasks}
    return kept
