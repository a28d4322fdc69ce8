"""Moderation through a live Daphne server: a moderator suspends a user in the panel
(real HTTP, the admin's own login and CSRF), and the user's open socket, website
session and API token end at once; sign-in is refused with a clear message until a
staff admin lifts the suspension."""

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from accounts.tests.factories import PASSWORD
from common.testing import LiveServer
from moderation.models import ModerationAction
from moderation.roles import MODERATORS, STAFF_ADMINS
from moderation.tests.support import staff
from realtime.tests.test_live_socket import App, expect_closed, receive, receive_until, sign_up

pytestmark = pytest.mark.django_db(transaction=True)

CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


async def _signed_in(server: LiveServer, path: str, fields: dict[str, str]) -> httpx.AsyncClient:
    """A browser-like client signed in through a real login form (``path``)."""
    client = httpx.AsyncClient(base_url=server.url, headers={"Referer": f"{server.url}{path}"})
    page = await client.get(path)
    token = CSRF_INPUT.search(page.text)
    assert token, page.text[:500]
    response = await client.post(path, data={**fields, "csrfmiddlewaretoken": token.group(1)})
    assert response.status_code == 302, response.text[:2000]
    return client


async def _panel(server: LiveServer, role: str) -> httpx.AsyncClient:
    user = await database_sync_to_async(staff)(role)
    return await _signed_in(
        server, "/admin/login/?next=/admin/", {"username": user.handle, "password": PASSWORD}
    )


async def _act(panel: httpx.AsyncClient, user_id: uuid.UUID, fields: dict[str, str]) -> None:
    """Fill in the action form of a user's page, as a moderator does."""
    page = await panel.get(f"/admin/accounts/user/{user_id}/change/")
    assert page.status_code == 200
    token = CSRF_INPUT.search(page.text)
    assert token
    response = await panel.post(
        f"/admin/accounts/user/{user_id}/act/",
        data={**fields, "csrfmiddlewaretoken": token.group(1)},
    )
    assert response.status_code == 302, response.text[-3000:]


async def _api_login(server: LiveServer, handle: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"{server.url}/api/v1") as client:
        return await client.post("/auth/login", json={"login": handle, "password": PASSWORD})


async def test_a_suspension_ends_socket_session_and_token_at_once_and_a_lift_restores_access(
    daphne_server: LiveServer,
) -> None:
    alice = await sign_up(daphne_server)
    phone = await alice.register_device()
    website = await _signed_in(
        daphne_server, "/login", {"login": alice.handle, "password": PASSWORD}
    )
    assert (await website.get("/settings/profile")).status_code == 200
    moderator = await _panel(daphne_server, MODERATORS)
    until = timezone.now() + timedelta(days=3)

    async with alice.socket(phone.device_id) as ws:
        assert (await receive(ws))["type"] == "hello"
        await _act(
            moderator,
            alice.user_id,
            {
                "action": "suspend",
                "reason": "threats in several reports",
                "until": until.strftime("%Y-%m-%dT%H:%M"),
            },
        )
        closing = await receive_until(ws, "closing")
        assert (closing["code"], closing["reason"]) == (4007, "account_suspended")
        await expect_closed(ws, 4007)

    # The next API call with the old token, the website session and a new sign-in are
    # all refused; sign-in says why and until when.
    async with alice.http() as client:
        assert (await client.get("/me")).status_code == 401
    assert (await website.get("/settings/profile")).status_code == 302
    refused = await _api_login(daphne_server, alice.handle)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_suspended"
    assert f"suspended until {until:%Y-%m-%d %H:%M}" in refused.json()["error"]["message"]
    site_login = await httpx.AsyncClient(base_url=daphne_server.url).get("/login")
    assert site_login.status_code == 200
    async with alice.socket(phone.device_id) as ws:
        await expect_closed(ws, 4001)  # the old token opens nothing either (unauthenticated)

    # A moderator cannot lift; a staff admin can, and access comes back with a new
    # sign-in (the old token and session stay ended).
    admin = await _panel(daphne_server, STAFF_ADMINS)
    await _act(admin, alice.user_id, {"action": "lift", "reason": "appeal accepted"})
    login = await _api_login(daphne_server, alice.handle)
    assert login.status_code == 200, login.text
    again = App(daphne_server, alice.user_id, alice.handle, login.json()["token"]["key"], alice.aik)
    async with again.http() as client:
        assert (await client.get("/me")).status_code == 200
    async with alice.http() as client:
        assert (await client.get("/me")).status_code == 401
    laptop = await again.register_device()
    async with again.socket(laptop.device_id) as ws:
        assert (await receive(ws))["type"] == "hello"

    kinds = await database_sync_to_async(
        lambda: list(
            ModerationAction.objects.filter(target_id=alice.user_id)
            .order_by("created_at", "id")
            .values_list("kind", "moderator_handle")
        )
    )()
    assert [kind for kind, _ in kinds] == ["suspend", "lift"]
    for client in (website, moderator, admin):
        await client.aclose()


async def test_a_ban_closes_the_socket_and_sign_in_says_banned(daphne_server: LiveServer) -> None:
    bob = await sign_up(daphne_server)
    phone = await bob.register_device()
    admin = await _panel(daphne_server, STAFF_ADMINS)
    async with bob.socket(phone.device_id) as ws:
        assert (await receive(ws))["type"] == "hello"
        await _act(admin, bob.user_id, {"action": "ban", "reason": "spam network"})
        closing = await receive_until(ws, "closing")
        assert (closing["code"], closing["reason"]) == (4007, "account_banned")
        await expect_closed(ws, 4007)
    refused = await _api_login(daphne_server, bob.handle)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_banned"
    assert refused.json()["error"]["message"] == "This account has been banned."
    await admin.aclose()
