"""Helpers for tests that run the real parts as subprocesses (see conftest.py)."""

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
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


def wait_for_other_database_sessions_to_end(timeout: float = 10) -> None:
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
