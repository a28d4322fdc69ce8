"""Rate limits hold under a burst: many requests at once, against live Daphne servers,
let through no more than the limit; the rest get 429 with Retry-After and the error
body, nothing fails with 5xx, and nothing beyond the limit is stored.

On `make test-services` the burst is spread over two Daphne processes that share the
limit through the Redis cache. On the embedded default the cache is per process, so
one process serves the burst."""

import asyncio
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import websockets

from accounts import services as account_services
from accounts.models import ApiToken, User
from accounts.tests.factories import PASSWORD, give_identity, make_device, make_user
from common.testing import SERVICES_MODE, LiveServer
from messaging.models import Report
from realtime.consumers import FRAME_BURST, FRAMES_PER_SECOND

pytestmark = pytest.mark.django_db(transaction=True)

AUTH_LIMIT = 12
ADDRESS_FAILURES = 4
ACCOUNT_FAILURES = 5
SEARCH_LIMIT = 5
KEY_DIRECTORY_LIMIT = 5
REPORTS_LIMIT = 5
BURST = 4  # times the limit, fired at once

# One proxy in front: each test comes from its own client address (X-Forwarded-For),
# so the tests of the module do not share the per-address counters.
BEHIND_A_PROXY = {"NUM_PROXIES": "1"}
LIMITS = {
    **BEHIND_A_PROXY,
    "THROTTLE_AUTH": f"{AUTH_LIMIT}/min",
    "THROTTLE_SEARCH": f"{SEARCH_LIMIT}/min",
    "THROTTLE_KEY_DIRECTORY": f"{KEY_DIRECTORY_LIMIT}/min",
    "THROTTLE_REPORTS": f"{REPORTS_LIMIT}/min",
}
# The sign-in lockout, with the auth throttle left generous so that it does not hide it.
LOCKOUT = {
    **BEHIND_A_PROXY,
    "LOGIN_ADDRESS_FAILURES": str(ADDRESS_FAILURES),
    "LOGIN_ACCOUNT_FAILURES": str(ACCOUNT_FAILURES),
}


def _processes(start_daphne: Callable[..., LiveServer], env: dict[str, str]) -> list[LiveServer]:
    """Two Daphne processes sharing Redis, or one alone on the embedded default."""
    return [start_daphne(env=env) for _ in range(2 if SERVICES_MODE else 1)]


@pytest.fixture(scope="module")
def servers(start_daphne: Callable[..., LiveServer]) -> list[LiveServer]:
    return _processes(start_daphne, LIMITS)


@pytest.fixture(scope="module")
def lockout_servers(start_daphne: Callable[..., LiveServer]) -> list[LiveServer]:
    return _processes(start_daphne, LOCKOUT)


def new_address() -> str:
    return f"198.51.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@dataclass
class Burst:
    responses: list[httpx.Response]

    def with_status(self, status: int) -> list[httpx.Response]:
        return [r for r in self.responses if r.status_code == status]

    def statuses(self) -> Counter[int]:
        return Counter(r.status_code for r in self.responses)


async def _fire(
    servers: list[LiveServer], requests: list[tuple[str, str, dict[str, Any]]]
) -> list[httpx.Response]:
    clients = [httpx.AsyncClient(base_url=f"{s.url}/api/v1", timeout=60) for s in servers]
    start = asyncio.Event()

    async def one(index: int, method: str, url: str, options: dict[str, Any]) -> httpx.Response:
        await start.wait()
        return await clients[index % len(clients)].request(method, url, **options)

    try:
        tasks = [
            asyncio.create_task(one(index, method, url, options))
            for index, (method, url, options) in enumerate(requests)
        ]
        await asyncio.sleep(0)
        start.set()
        return list(await asyncio.gather(*tasks))
    finally:
        for client in clients:
            await client.aclose()


def fire_at_once(
    servers: list[LiveServer], requests: list[tuple[str, str, dict[str, Any]]]
) -> Burst:
    """Send every request at the same moment, spread over the servers in turn."""
    return Burst(asyncio.run(_fire(servers, requests)))


def assert_refused_politely(burst: Burst, codes: set[str]) -> None:
    """No 5xx; every 429 has Retry-After (whole seconds) and the API's error body with
    the same number."""
    assert not [r for r in burst.responses if r.status_code >= 500], burst.statuses()
    for response in burst.with_status(429):
        retry_after = response.headers.get("Retry-After", "")
        assert retry_after.isdigit() and int(retry_after) >= 1, response.headers
        error = response.json()["error"]
        assert error["code"] in codes, error
        assert error["retry_after"] == int(retry_after), error


def bearer(user: User) -> dict[str, str]:
    _, key = account_services.api_token_create(user=user, name="burst")
    return {"Authorization": f"Bearer {key}"}


def test_login_burst_signs_in_no_more_than_the_auth_limit(servers: list[LiveServer]) -> None:
    """Right passwords of many accounts from one address (a shared network): the auth
    throttle of the address lets its number through."""
    people = [make_user() for _ in range(BURST * AUTH_LIMIT)]
    headers = {"X-Forwarded-For": new_address()}
    burst = fire_at_once(
        servers,
        [
            ("POST", "/auth/login", {
                "json": {"login": person.handle, "password": PASSWORD}, "headers": headers,
            })
            for person in people
        ],
    )  # fmt: skip
    assert burst.statuses() == {200: AUTH_LIMIT, 429: (BURST - 1) * AUTH_LIMIT}
    assert_refused_politely(burst, {"throttled"})
    assert ApiToken.objects.filter(user__in=people).count() == AUTH_LIMIT


def test_wrong_password_burst_locks_the_address_after_the_allowed_failures(
    lockout_servers: list[LiveServer],
) -> None:
    """Each guess at another account (so no account lockout): the address is locked
    after ADDRESS_FAILURES guesses, however many come at once, and then even the right
    password from there is refused."""
    headers = {"X-Forwarded-For": new_address()}
    guesses = [
        ("POST", "/auth/login", {"json": {"login": f"nobody{n}", "password": "wrong guess 1"}})
        for n in range(ADDRESS_FAILURES * BURST)
    ]
    for _, _, options in guesses:
        options["headers"] = headers
    burst = fire_at_once(lockout_servers, guesses)
    checked = burst.with_status(400)
    assert all(r.json()["error"]["code"] == "invalid_credentials" for r in checked)
    assert burst.statuses() == {400: ADDRESS_FAILURES, 429: len(guesses) - ADDRESS_FAILURES}
    assert_refused_politely(burst, {"locked_out"})

    alice = make_user()
    again = fire_at_once(
        lockout_servers[-1:],
        [("POST", "/auth/login", {
            "json": {"login": alice.handle, "password": PASSWORD}, "headers": headers,
        })],
    )  # fmt: skip
    assert again.statuses() == {429: 1}
    assert again.responses[0].json()["error"]["code"] == "locked_out"
    assert not ApiToken.objects.filter(user=alice).exists()


def test_wrong_current_password_burst_tries_no_more_than_the_account_allows(
    lockout_servers: list[LiveServer],
) -> None:
    """A stolen token guessing the current password to change it: the guesses count
    toward the account's lockout, however many come at once, and the password stays."""
    alice = make_user()
    headers = {**bearer(alice), "X-Forwarded-For": new_address()}
    guesses = [
        ("POST", "/auth/password", {
            "json": {"old_password": f"guess {n}", "new_password": "a new long passphrase 9"},
            "headers": headers,
        })
        for n in range(ACCOUNT_FAILURES * BURST)
    ]  # fmt: skip
    burst = fire_at_once(lockout_servers, guesses)
    assert burst.statuses() == {400: ACCOUNT_FAILURES, 429: len(guesses) - ACCOUNT_FAILURES}
    assert all(r.json()["error"]["code"] == "invalid_credentials" for r in burst.with_status(400))
    assert_refused_politely(burst, {"locked_out"})
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_signup_burst_creates_no_more_accounts_than_the_auth_limit(
    servers: list[LiveServer],
) -> None:
    prefix = f"b{uuid.uuid4().hex[:6]}"
    headers = {"X-Forwarded-For": new_address()}
    requests = [
        ("POST", "/auth/signup", {
            "json": {"handle": f"{prefix}{n}", "email": f"{prefix}{n}@example.com",
                     "password": PASSWORD},
            "headers": headers,
        })
        for n in range(BURST * AUTH_LIMIT)
    ]  # fmt: skip
    burst = fire_at_once(servers, requests)
    assert burst.statuses() == {201: AUTH_LIMIT, 429: (BURST - 1) * AUTH_LIMIT}
    assert_refused_politely(burst, {"throttled"})
    assert User.objects.filter(handle__startswith=prefix).count() == AUTH_LIMIT


def test_search_burst_answers_no_more_than_the_search_limit(servers: list[LiveServer]) -> None:
    searcher = make_user()
    headers = bearer(searcher)
    burst = fire_at_once(
        servers,
        [("GET", "/users", {"params": {"q": "us"}, "headers": headers})] * (BURST * SEARCH_LIMIT),
    )
    assert burst.statuses() == {200: SEARCH_LIMIT, 429: (BURST - 1) * SEARCH_LIMIT}
    assert_refused_politely(burst, {"throttled"})


def test_key_directory_burst_answers_no_more_than_its_limit(servers: list[LiveServer]) -> None:
    owner = make_user()
    give_identity(owner)
    headers = bearer(make_user())
    requests = [
        ("GET", f"/users/{owner.handle}/keys", {"headers": headers}),
        ("GET", f"/keys/{owner.pk}", {"headers": headers}),
    ] * (BURST * KEY_DIRECTORY_LIMIT // 2)
    burst = fire_at_once(servers, requests)
    assert burst.statuses() == {
        200: KEY_DIRECTORY_LIMIT,
        429: (BURST - 1) * KEY_DIRECTORY_LIMIT,
    }
    assert_refused_politely(burst, {"throttled"})


def test_report_burst_stores_no_more_reports_than_the_limit(servers: list[LiveServer]) -> None:
    """A user-scoped write: each report names another profile, so only the throttle
    stops them."""
    reporter = make_user()
    headers = bearer(reporter)
    targets = [make_user() for _ in range(BURST * REPORTS_LIMIT)]
    burst = fire_at_once(
        servers,
        [
            ("POST", f"/users/{t.handle}/report", {"json": {"reason": "spam"}, "headers": headers})
            for t in targets
        ],
    )
    assert burst.statuses() == {201: REPORTS_LIMIT, 429: (BURST - 1) * REPORTS_LIMIT}
    assert_refused_politely(burst, {"throttled"})
    assert Report.objects.filter(reporter=reporter).count() == REPORTS_LIMIT


# --- The socket -----------------------------------------------------------------------------


async def _frame_burst(server: LiveServer, key: str, device_id: uuid.UUID, frames: int) -> Any:
    async with websockets.connect(
        f"{server.ws_url}/ws/?device={device_id}",
        additional_headers={"Authorization": f"Bearer {key}"},
        open_timeout=10,
        max_queue=None,
    ) as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "hello"
        started = time.monotonic()
        for number in range(frames):
            await ws.send(json.dumps({"type": "ping", "id": number}))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(frames)]
        elapsed = time.monotonic() - started
        # The socket stays open, and the bucket refills.
        await asyncio.sleep(1)
        await ws.send(json.dumps({"type": "ping", "id": "after"}))
        after = json.loads(await asyncio.wait_for(ws.recv(), 10))
        return replies, elapsed, after


def test_frame_burst_beyond_the_bucket_is_refused_and_the_socket_stays_open(
    servers: list[LiveServer],
) -> None:
    user = make_user()
    aik = give_identity(user)
    token, key = account_services.api_token_create(user=user, name="socket")
    _, device = make_device(user, aik, token)
    frames = BURST * FRAME_BURST
    replies, elapsed, after = asyncio.run(_frame_burst(servers[0], key, device.device_id, frames))
    kinds = Counter(
        reply["type"] if reply["type"] != "error" else reply["error"]["code"] for reply in replies
    )
    assert set(kinds) <= {"pong", "rate_limited"}, kinds
    # The bucket holds FRAME_BURST frames and refills FRAMES_PER_SECOND while the burst runs.
    allowed = FRAME_BURST + int(FRAMES_PER_SECOND * elapsed) + 1
    assert FRAME_BURST <= kinds["pong"] <= allowed, (kinds, elapsed)
    assert kinds["rate_limited"] == frames - kinds["pong"]
    assert after == {"type": "pong", "ref": "after"}
