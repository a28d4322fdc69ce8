"""Matrix Synapse as the peer for the message-delivery benchmark.

Synapse (from PyPI, in its own venv under var/bench/synapse/) runs as one monolith process
on loopback with SQLite or PostgreSQL. Each pair of users shares a DM-like room: user A
sends with ``PUT /rooms/{room}/send``, user B receives through a long-poll ``/sync`` loop.
Senders do not sync, so each message is delivered once. Two measurements:

1. saturation: a closed loop with 400 sends in flight, delivered messages per second;
2. latency at half that rate: an open loop, time from just before the PUT until the
   receiver has parsed the /sync response that carries the message.

The load generator runs in this process (asyncio, httpx) and shares the machine's cores
with Synapse (and PostgreSQL).

    .venv/bin/python -m bench.synapse_peer --database sqlite --users 100
"""

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import psycopg
from psycopg import sql

from bench.servers import Process, cpu_seconds, free_port

T = TypeVar("T")

SYNAPSE_VERSION = "1.163.2"
ROOT = Path(__file__).resolve().parent.parent
SYNAPSE_DIR = ROOT / "var" / "bench" / "synapse"
VENV_DIR = SYNAPSE_DIR / "venv"
SERVER_NAME = "localtest"

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_DATABASE = "parley_bench_synapse"

STARTUP_SECONDS = 120.0
SETUP_CONCURRENCY = 16  # registrations and room set-ups in flight
MAX_IN_FLIGHT = 400  # sends in flight: the closed loop's cap, the open loop's safety cap
WARMUP_SECONDS = 2.0  # at least; see _saturate
WARMUP_LIMIT_SECONDS = 60.0
DRAIN_SECONDS = 15.0  # bounded wait for stragglers after each phase
# httpcore's pool walks all its connections for every request (and polls idle ones), which
# made one client with 400 connections cost more CPU than Synapse itself: spread the load
# over many small clients, as real devices would be.
CLIENT_CONNECTIONS = 8
# Synapse listens with a backlog of 50: more connects at once overflow it, and the kernel's
# SYN retries (after 1, 3, 7 s...) stalled the first seconds of every run
CONNECTS_AT_ONCE = 32
SYNC_TIMEOUT_MS = 10_000
UNLIMITED = {"per_second": 100_000, "burst_count": 100_000}


# --- installation and configuration ---------------------------------------------------


def _installed_version(python: Path) -> str | None:
    """The Synapse version in the venv, or None if it (or its PostgreSQL driver) is missing."""
    probe = "import importlib.metadata as m, psycopg2; print(m.version('matrix-synapse'))"
    result = subprocess.run(  # noqa: S603  (fixed command line of ours)
        [str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else None


def install_synapse(*, log: Callable[[str], None] = print) -> float:
    """Install Synapse into its own venv unless that version is there; returns seconds spent."""
    python = VENV_DIR / "bin" / "python"
    if python.exists() and _installed_version(python) == SYNAPSE_VERSION:
        log(f"synapse {SYNAPSE_VERSION} already installed")
        return 0.0
    started = time.perf_counter()
    if not python.exists():
        subprocess.run(  # noqa: S603  (fixed command line of ours)
            [sys.executable, "-m", "venv", str(VENV_DIR)], check=True, timeout=300
        )
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    attempts = [
        [f"matrix-synapse[postgres]=={SYNAPSE_VERSION}"],
        # psycopg2 from the [postgres] extra compiles against libpq; the binary wheel does not
        [f"matrix-synapse=={SYNAPSE_VERSION}", "psycopg2-binary"],
    ]
    output = ""
    for packages in attempts:
        # pip's output (warnings included) is kept for the error message only
        result = subprocess.run(  # noqa: S603  (fixed command line of ours)
            [*pip, *packages], capture_output=True, text=True, timeout=1800, check=False
        )
        output = result.stdout + result.stderr
        if result.returncode == 0 and _installed_version(python) == SYNAPSE_VERSION:
            seconds = time.perf_counter() - started
            log(f"installed {' '.join(packages)} in {seconds:.0f} s")
            return seconds
    raise RuntimeError(f"could not install matrix-synapse {SYNAPSE_VERSION}:\n{output[-3000:]}")


def _write_config(run_dir: Path, *, database: str, port: int) -> tuple[Path, str]:
    """The homeserver config and its log config; returns the config path and the
    registration shared secret. YAML is a superset of JSON, so both are written as JSON."""
    secret = secrets.token_urlsafe(32)
    if database == "sqlite":
        db_config: dict[str, Any] = {
            "name": "sqlite3",
            "args": {"database": str(run_dir / "homeserver.db")},
        }
    else:
        db_config = {
            "name": "psycopg2",
            "args": {
                "user": "postgres",
                "dbname": PG_DATABASE,
                "host": "127.0.0.1",
                "port": 5432,
                "cp_min": 5,
                "cp_max": 10,
            },
        }
    config: dict[str, Any] = {
        "server_name": SERVER_NAME,
        "pid_file": str(run_dir / "homeserver.pid"),
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                # the admin API used for registration is served by the client resource
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": db_config,
        "log_config": str(run_dir / "log.config"),
        "media_store_path": str(run_dir / "media_store"),
        "signing_key_path": str(run_dir / f"{SERVER_NAME}.signing.key"),  # made at first start
        "report_stats": False,
        "registration_shared_secret": secret,
        "macaroon_secret_key": secrets.token_urlsafe(32),
        "form_secret": secrets.token_urlsafe(32),
        "enable_registration": False,
        # never contact matrix.org or any other server
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation_domain_whitelist": [],
        "presence": {"enabled": False},
        "url_preview_enabled": False,
        # bcrypt cost only affects registration and login (password hashing), not message
        # delivery; 4 rounds make registering thousands of users fast
        "bcrypt_rounds": 4,
        # a fresh database queues background updates; run them flat out before measuring
        "background_updates": {"sleep_enabled": False},
        # rate limits off: the default rc_message (0.2/s, burst 10) would throttle senders
        "rc_message": UNLIMITED,
        "rc_registration": UNLIMITED,
        "rc_registration_token_validity": UNLIMITED,
        "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
        "rc_admin_redaction": UNLIMITED,
        "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
        "rc_joins_per_room": UNLIMITED,
        "rc_key_requests": UNLIMITED,
        "rc_3pid_validation": UNLIMITED,
        "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
        "rc_third_party_invite": UNLIMITED,
        "rc_media_create": UNLIMITED,
        "rc_presence": {"per_user": UNLIMITED},
        "rc_delayed_event_mgmt": UNLIMITED,
        "rc_room_creation": UNLIMITED,
        "rc_reports": UNLIMITED,
        "rc_user_directory": UNLIMITED,
        "rc_profile": UNLIMITED,
    }
    # INFO logging costs Synapse 10-15 % of a core near saturation
    log_config = {
        "version": 1,
        "formatters": {"precise": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "precise",
                "filename": str(run_dir / "homeserver.log"),
                "encoding": "utf8",
            }
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }
    config_path = run_dir / "homeserver.yaml"
    (run_dir / "log.config").write_text(json.dumps(log_config, indent=2) + "\n")
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return config_path, secret


def _pg_recreate() -> None:
    """A fresh database; Synapse refuses any collation but C."""
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as conn:
        name = sql.Identifier(PG_DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0"
            ).format(name)
        )


def _pg_drop() -> None:
    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PG_DATABASE))
        )


def _cpu_wait_seconds(pid: int) -> float:
    """How long the process's main thread was runnable but waiting for a core: Synapse is
    bound by that one thread, so this shows how much other load on the machine held it back."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def _memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory now and its peak (VmRSS, VmHWM), from /proc."""
    values = {"VmRSS": 0, "VmHWM": 0}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in values:
            values[key] = int(rest.split()[0])
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


# --- users and rooms ------------------------------------------------------------------


@dataclass
class Pair:
    """One DM: ``sender_token`` writes, the receiver long-polls /sync from ``since``."""

    room_id: str
    sender_token: str
    receiver_token: str
    filter_id: str
    since: str


@dataclass
class Tally:
    """Every message's send start and receipt (perf_counter) by message id."""

    sent_at: dict[int, float] = field(default_factory=dict)
    ok: set[int] = field(default_factory=set)
    failed: set[int] = field(default_factory=set)
    done_at: dict[int, float] = field(default_factory=dict)  # sends answered 200
    seen_at: dict[int, float] = field(default_factory=dict)
    send_errors: int = 0
    sync_errors: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by status code or exception
    sync_limited: int = 0  # gappy /sync timelines: would show up as lost messages
    next_id: int = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def missing(self, ids: list[int]) -> int:
        return sum(1 for mid in ids if mid in self.ok and mid not in self.seen_at)

    def settled(self, ids: list[int]) -> bool:
        """Whether every one of these messages was delivered or failed to send."""
        return all(mid in self.seen_at or mid in self.failed for mid in ids)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url.path}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


async def _register(
    client: httpx.AsyncClient, secret: str, username: str, *, admin: bool = False
) -> tuple[str, str]:
    """A user through the shared-secret admin API; returns (user id, access token)."""
    url = "/_synapse/admin/v1/register"
    nonce = _json(await client.get(url))["nonce"]
    password = secrets.token_urlsafe(12)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode()]))
    mac.update(b"\x00admin" if admin else b"\x00notadmin")
    body = {
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": mac.hexdigest(),
    }
    reply = _json(await client.post(url, json=body))
    return reply["user_id"], reply["access_token"]


async def _make_pair(
    client: httpx.AsyncClient, sender: tuple[str, str], receiver: tuple[str, str]
) -> Pair:
    (_, sender_token), (receiver_id, receiver_token) = sender, receiver
    created = await client.post(
        "/_matrix/client/v3/createRoom",
        headers=_auth(sender_token),
        json={"preset": "trusted_private_chat", "is_direct": True, "invite": [receiver_id]},
    )
    room_id = _json(created)["room_id"]
    joined = await client.post(
        f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/join",
        headers=_auth(receiver_token),
        json={},
    )
    _json(joined)
    # only this room's messages: no presence, account data, receipts or typing
    sync_filter = {
        "room": {
            "rooms": [room_id],
            "timeline": {"limit": 1000, "types": ["m.room.message"]},
            "state": {"lazy_load_members": True},
            "ephemeral": {"types": []},
            "account_data": {"types": []},
        },
        "presence": {"types": []},
        "account_data": {"types": []},
    }
    filtered = await client.post(
        f"/_matrix/client/v3/user/{quote(receiver_id, safe='')}/filter",
        headers=_auth(receiver_token),
        json=sync_filter,
    )
    filter_id = _json(filtered)["filter_id"]
    # the initial sync gives the token the measured long-polls start from
    initial = await client.get(
        "/_matrix/client/v3/sync",
        params={"filter": filter_id, "timeout": "0"},
        headers=_auth(receiver_token),
    )
    since = _json(initial)["next_batch"]
    return Pair(room_id, sender_token, receiver_token, filter_id, since)


async def _bounded(limit: int, jobs: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the coroutines with at most ``limit`` of them in flight."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Coroutine[Any, Any, T]) -> T:
        async with semaphore:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


async def _wait_background_updates(client: httpx.AsyncClient, admin_token: str) -> float:
    """Wait (bounded) until the fresh database's background updates are done."""
    started = time.perf_counter()
    deadline = started + STARTUP_SECONDS
    while time.perf_counter() < deadline:
        status = await client.get(
            "/_synapse/admin/v1/background_updates/status", headers=_auth(admin_token)
        )
        if not _json(status)["current_updates"]:
            return time.perf_counter() - started
        await asyncio.sleep(0.5)
    raise RuntimeError("Synapse's background updates did not finish")


async def _set_up(
    base: str, secret: str, users: int, log: Callable[[str], None]
) -> tuple[list[Pair], dict[str, float]]:
    timings: dict[str, float] = {}
    limits = httpx.Limits(max_connections=SETUP_CONCURRENCY * 2)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=120, trust_env=False
    ) as client:
        started = time.perf_counter()
        _, admin_token = await _register(client, secret, "bench_admin", admin=True)
        accounts: list[tuple[str, str]] = await _bounded(
            SETUP_CONCURRENCY,
            [_register(client, secret, f"u{i:05d}") for i in range(users)],
        )
        timings["register_seconds"] = time.perf_counter() - started
        log(f"registered {users} users in {timings['register_seconds']:.1f} s")

        started = time.perf_counter()
        pairs: list[Pair] = await _bounded(
            SETUP_CONCURRENCY,
            [_make_pair(client, accounts[i], accounts[i + 1]) for i in range(0, users, 2)],
        )
        timings["rooms_seconds"] = time.perf_counter() - started
        log(f"{len(pairs)} rooms created, joined and synced in {timings['rooms_seconds']:.1f} s")
        timings["background_updates_wait_seconds"] = await _wait_background_updates(
            client, admin_token
        )
    return pairs, timings


# --- load -----------------------------------------------------------------------------


async def _receive(
    client: httpx.AsyncClient, pair: Pair, tally: Tally, deadline: float, first_timeout_ms: int
) -> None:
    """User B's long-poll /sync loop; runs until cancelled (or the deadline)."""
    since = pair.since
    headers = _auth(pair.receiver_token)
    timeout_ms = first_timeout_ms
    while time.perf_counter() < deadline:
        params = {"since": since, "timeout": str(timeout_ms), "filter": pair.filter_id}
        timeout_ms = SYNC_TIMEOUT_MS
        try:
            response = await client.get("/_matrix/client/v3/sync", params=params, headers=headers)
            body = _json(response)
        except (httpx.HTTPError, RuntimeError) as exc:
            tally.sync_errors += 1
            tally.errors[f"sync {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)  # no hot loop against a failing server
            continue
        now = time.perf_counter()
        since = body["next_batch"]
        room = body.get("rooms", {}).get("join", {}).get(pair.room_id, {})
        timeline = room.get("timeline", {})
        if timeline.get("limited"):
            tally.sync_limited += 1
        for event in timeline.get("events", []):
            mid = event.get("content", {}).get("bench_id")
            if isinstance(mid, int) and mid not in tally.seen_at:
                tally.seen_at[mid] = now


async def _send(client: httpx.AsyncClient, pair: Pair, mid: int, tally: Tally) -> bool:
    started = time.perf_counter()
    tally.sent_at[mid] = started
    # Matrix's canonical JSON rejects floats: the send time goes as integer microseconds
    content = {
        "msgtype": "m.text",
        "body": f"bench message {mid}",
        "bench_id": mid,
        "sent_us": time.time_ns() // 1000,
    }
    url = f"/_matrix/client/v3/rooms/{quote(pair.room_id, safe='')}/send/m.room.message/{mid}"
    try:
        response = await client.put(url, json=content, headers=_auth(pair.sender_token))
    except httpx.HTTPError as exc:
        tally.send_errors += 1
        tally.errors[f"send {type(exc).__name__}"] += 1
        tally.failed.add(mid)
        return False
    if response.status_code != 200:
        tally.send_errors += 1
        tally.errors[f"send {response.status_code}"] += 1
        tally.failed.add(mid)
        return False
    tally.ok.add(mid)
    tally.done_at[mid] = time.perf_counter()
    return True


async def _drain(tally: Tally, ids: list[int]) -> None:
    """Wait (bounded) until every message sent OK has been seen."""
    for _ in range(int(DRAIN_SECONDS * 10)):
        if not tally.missing(ids):
            return
        await asyncio.sleep(0.1)


async def _saturate(
    clients: list[httpx.AsyncClient], pairs: list[Pair], tally: Tally, seconds: float
) -> dict[str, Any]:
    """Closed loop: MAX_IN_FLIGHT workers each send, wait for the reply, send again.

    The measured window opens after the warm-up: at least WARMUP_SECONDS, and until the
    first MAX_IN_FLIGHT sends have been delivered. With many rooms Synapse takes longer
    than that to answer them (about 13 s with 500 rooms on two cores), and a window opened
    at 2 s would measure the pipeline filling up: nothing at all in a 10 s window.
    """
    ids: list[int] = []
    errors_before = tally.send_errors
    started = time.perf_counter()
    window: list[float] = []  # start and end, once the warm-up is over

    async def worker(client: httpx.AsyncClient, start: float) -> None:
        await asyncio.sleep(start)
        while not window or time.perf_counter() < window[1]:
            mid = tally.new_id()
            ids.append(mid)
            if not await _send(client, pairs[mid % len(pairs)], mid, tally):
                await asyncio.sleep(0.05)  # no hot loop against a failing server

    async def warm_up() -> None:
        await asyncio.sleep(WARMUP_SECONDS)
        first_round = ids[:MAX_IN_FLIGHT]
        for _ in range(int((WARMUP_LIMIT_SECONDS - WARMUP_SECONDS) * 10)):
            if tally.settled(first_round):
                break
            await asyncio.sleep(0.1)
        now = time.perf_counter()
        window.extend([now, now + seconds])

    # workers start one by one over the warm-up: 400 sends arriving at once move through
    # Synapse in lockstep and keep completing in waves
    await asyncio.gather(
        warm_up(),
        *(
            worker(clients[i % len(clients)], i * WARMUP_SECONDS / MAX_IN_FLIGHT)
            for i in range(MAX_IN_FLIGHT)
        ),
    )
    window_start, window_end = window
    await _drain(tally, ids)
    in_window = sum(1 for mid in ids if window_start <= tally.seen_at.get(mid, 0) <= window_end)
    sent_in_window = sum(
        1 for mid in ids if window_start <= tally.done_at.get(mid, 0) <= window_end
    )
    return {
        "warmup_s": window_start - started,
        "msgs_per_s": in_window / seconds,
        "sends_per_s": sent_in_window / seconds,
        "send_errors": tally.send_errors - errors_before,
        "sent_ok": sum(1 for mid in ids if mid in tally.ok),
        "lost": tally.missing(ids),
    }


def _percentile_ms(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of durations in seconds, in milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))
    return round(ordered[rank] * 1000, 1)


async def _open_loop(
    clients: list[httpx.AsyncClient], pairs: list[Pair], tally: Tally, rate: float, seconds: float
) -> dict[str, Any]:
    """Open loop: message i is due at t0 + i / rate, whatever the earlier ones are doing."""
    ids: list[int] = []
    in_flight: set[asyncio.Task[bool]] = set()
    skipped = 0
    errors_before = tally.send_errors
    count = int(rate * seconds)  # none at a rate of 0
    t0 = time.perf_counter()
    for i in range(count):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if len(in_flight) >= MAX_IN_FLIGHT:
            skipped += 1  # the server fell far behind; an unbounded queue would hide it
            continue
        mid = tally.new_id()
        ids.append(mid)
        client = clients[mid % len(clients)]
        task = asyncio.create_task(_send(client, pairs[mid % len(pairs)], mid, tally))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    schedule_lag = time.perf_counter() - t0 - (count - 1) / rate if count else 0.0
    if in_flight:
        await asyncio.wait(in_flight, timeout=DRAIN_SECONDS)
    await _drain(tally, ids)
    latencies = [tally.seen_at[mid] - tally.sent_at[mid] for mid in ids if mid in tally.seen_at]
    sent = sum(1 for mid in ids if mid in tally.ok)
    return {
        "latency_ms": {f"p{p}": _percentile_ms(latencies, p) for p in (50, 95, 99)},
        "latency_max_ms": _percentile_ms(latencies, 100),
        "sent": sent,
        "delivered": len(latencies),
        "lost": tally.missing(ids),
        "send_errors": tally.send_errors - errors_before,
        "skipped": skipped,
        "schedule_lag_s": round(schedule_lag, 3),
    }


async def _open_connections(clients: list[httpx.AsyncClient]) -> None:
    """Open CLIENT_CONNECTIONS connections in each client, CONNECTS_AT_ONCE at a time."""
    per_batch = max(1, CONNECTS_AT_ONCE // CLIENT_CONNECTIONS)
    for start in range(0, len(clients), per_batch):
        # requests started together cannot share a connection: each opens its own
        replies = await asyncio.gather(
            *(
                client.get("/_matrix/client/versions")
                for client in clients[start : start + per_batch]
                for _ in range(CLIENT_CONNECTIONS)
            )
        )
        for reply in replies:
            reply.raise_for_status()


async def _measure(
    base: str,
    pairs: list[Pair],
    pid: int,
    saturation_seconds: float,
    latency_seconds: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    tally = Tally()
    tls = ssl.create_default_context()  # unused on plain http, but each client would load CAs
    sync_timeout = httpx.Timeout(SYNC_TIMEOUT_MS / 1000 + 30)

    def client(timeout: httpx.Timeout) -> httpx.AsyncClient:
        # connections opened up front must outlive the run (httpx closes idle ones after 5 s)
        limits = httpx.Limits(
            max_connections=CLIENT_CONNECTIONS * 2,
            max_keepalive_connections=None,
            keepalive_expiry=3600,
        )
        return httpx.AsyncClient(
            base_url=base, limits=limits, timeout=timeout, verify=tls, trust_env=False
        )

    async with contextlib.AsyncExitStack() as stack:
        # every receiver parks one long-poll; MAX_IN_FLIGHT sends on top
        sync_clients = [
            await stack.enter_async_context(client(sync_timeout))
            for _ in range(0, len(pairs), CLIENT_CONNECTIONS)
        ]
        send_clients = [
            await stack.enter_async_context(client(httpx.Timeout(60)))
            for _ in range(0, MAX_IN_FLIGHT, CLIENT_CONNECTIONS)
        ]
        await _open_connections([*sync_clients, *send_clients])
        deadline = (
            time.perf_counter() + saturation_seconds + latency_seconds + 4 * DRAIN_SECONDS + 60
        )
        # first long-polls of staggered lengths: parked together, 500 receivers' polls
        # would all time out together, a burst of work for Synapse in the measured window
        receivers = [
            asyncio.create_task(
                _receive(
                    sync_clients[i // CLIENT_CONNECTIONS],
                    pair,
                    tally,
                    deadline,
                    SYNC_TIMEOUT_MS * (i + 1) // len(pairs),
                )
            )
            for i, pair in enumerate(pairs)
        ]
        try:
            await asyncio.sleep(1.0)  # let the receivers park their long-polls

            before = _cpu_counters(pid)
            saturation = await _saturate(send_clients, pairs, tally, saturation_seconds)
            saturation_cpu = _cpu_used(pid, before)
            rate = saturation["msgs_per_s"] / 2
            log(
                f"saturation {saturation['msgs_per_s']:.1f} msg/s "
                f"({saturation['send_errors']} send errors); latency at {rate:.1f} msg/s"
            )
            if rate <= 0:
                # the first sends had not come back when the window closed (Synapse's
                # queue of 400 sends is long with many rooms): a longer window would do
                log("nothing delivered in the saturation window: no latency phase")

            before = _cpu_counters(pid)
            half = await _open_loop(send_clients, pairs, tally, rate, latency_seconds)
            half_cpu = _cpu_used(pid, before)
            rss, rss_peak = _memory_mib(pid)
        finally:
            for task in receivers:
                task.cancel()
            await asyncio.gather(*receivers, return_exceptions=True)
    return {
        "saturation_msgs_per_s": round(saturation["msgs_per_s"], 1),
        "saturation_sends_per_s": round(saturation["sends_per_s"], 1),
        "saturation_send_errors": saturation["send_errors"],
        "saturation_warmup_s": round(saturation["warmup_s"], 1),
        "saturation_sent": saturation["sent_ok"],
        "saturation_lost": saturation["lost"],
        "half_rate": round(rate, 1),
        "latency_ms": half["latency_ms"],
        "latency_max_ms": half["latency_max_ms"],
        "sent": half["sent"],
        "delivered": half["delivered"],
        "lost": half["lost"],
        "half_rate_send_errors": half["send_errors"],
        "half_rate_skipped": half["skipped"],
        "half_rate_schedule_lag_s": half["schedule_lag_s"],
        "sync_errors": tally.sync_errors,
        "errors": dict(tally.errors),
        "sync_limited": tally.sync_limited,
        "cpu_seconds": {"saturation": saturation_cpu, "half_rate": half_cpu},
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(rss_peak, 1),
    }


def _cpu_counters(pid: int) -> dict[str, float]:
    own = os.times()
    return {
        "synapse": cpu_seconds(pid),
        "synapse_waiting_for_cpu": _cpu_wait_seconds(pid),
        "loadgen": own.user + own.system,
    }


def _cpu_used(pid: int, before: dict[str, float]) -> dict[str, float]:
    """CPU seconds used (or waited for) since ``before``."""
    return {key: round(value - before[key], 1) for key, value in _cpu_counters(pid).items()}


async def _wait_ready(base: str, process: Process) -> None:
    deadline = time.perf_counter() + STARTUP_SECONDS
    async with httpx.AsyncClient(base_url=base, timeout=5, trust_env=False) as client:
        while time.perf_counter() < deadline:
            if process.popen.poll() is not None:
                raise RuntimeError(f"Synapse exited:\n{process.log()[-3000:]}")
            try:
                if (await client.get("/_matrix/client/versions")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(
        f"Synapse did not answer in {STARTUP_SECONDS:.0f} s:\n{process.log()[-3000:]}"
    )


# --- the run --------------------------------------------------------------------------


def run_synapse(
    *,
    database: str,
    users: int,
    saturation_seconds: float = 15.0,
    latency_seconds: float = 15.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Benchmark a fresh Synapse with ``users`` users in ``users // 2`` DM rooms.

    ``database`` is "sqlite" or "postgresql" (the machine's server on 127.0.0.1:5432,
    trust auth). Installs Synapse on first use; wipes its data and config every run.
    """
    if database not in ("sqlite", "postgresql"):
        raise ValueError(f"database must be sqlite or postgresql, not {database!r}")
    if users < 2 or users % 2:
        raise ValueError("users must be an even number, at least 2")
    install_seconds = install_synapse(log=log)

    run_dir = SYNAPSE_DIR / database
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config_path, secret = _write_config(run_dir, database=database, port=port)
    if database == "postgresql":
        _pg_recreate()

    process: Process | None = None
    try:
        started = time.perf_counter()
        argv = [str(VENV_DIR / "bin" / "python"), "-m", "synapse.app.homeserver"]
        process = Process(f"synapse-{database}", [*argv, "-c", str(config_path)], os.environ)
        asyncio.run(_wait_ready(base, process))
        startup_seconds = time.perf_counter() - started
        log(f"synapse {SYNAPSE_VERSION} ({database}) answered in {startup_seconds:.1f} s")
        pairs, timings = asyncio.run(_set_up(base, secret, users, log))
        setup_seconds = time.perf_counter() - started
        results = asyncio.run(
            _measure(base, pairs, process.pid, saturation_seconds, latency_seconds, log)
        )
    finally:
        if process is not None:
            process.stop()
        if database == "postgresql":
            _pg_drop()
    return {
        "peer": "synapse",
        "synapse_version": SYNAPSE_VERSION,
        "database": database,
        "users": users,
        "rooms": len(pairs),
        "saturation_seconds": saturation_seconds,
        "latency_seconds": latency_seconds,
        **results,
        "install_seconds": round(install_seconds, 1),
        "startup_seconds": round(startup_seconds, 1),
        **{name: round(seconds, 1) for name, seconds in timings.items()},
        "setup_seconds": round(setup_seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run_synapse(
        database=args.database,
        users=args.users,
        saturation_seconds=args.seconds,
        latency_seconds=args.seconds,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    result["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
