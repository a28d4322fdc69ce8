"""Warnings as their owner sees them: the API (GET /api/v1/me/warnings, POST
.../{id}/acknowledge), the banner on every site page, and the account.warning event."""

import re
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from django.contrib.auth.models import Group
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import make_user
from messaging.tests.support import connect, person
from moderation.context_processors import warnings as warnings_context
from moderation.models import AccountWarning
from moderation.roles import MODERATORS
from moderation.services import ActionInput, user_moderate, warning_acknowledge

BANNER = "A moderator warned your account: "


def make_moderator(handle: str = "kim") -> User:
    moderator = make_user(handle)
    moderator.is_staff = True
    moderator.save(update_fields=["is_staff"])
    moderator.groups.add(Group.objects.get(name=MODERATORS))
    return User.objects.get(pk=moderator.pk)  # no stale permission cache


def warn(moderator: User, user: User, note: str) -> AccountWarning:
    user_moderate(
        moderator=moderator,
        user_id=user.pk,
        action=ActionInput(kind="warn", reason="Reported twice for spam.", note=note),
    )
    return AccountWarning.objects.filter(user=user).latest("created_at")


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.HandleOrEmailBackend")
    return client


def fields(warning: AccountWarning) -> dict[str, Any]:
    """What the API says of a warning, from the database, independently of the code."""
    warning.refresh_from_db()
    return {
        "id": warning.pk,
        "reason": warning.reason,
        "text": warning.text,
        "created_at": warning.created_at.isoformat(),
        "acknowledged_at": (
            warning.acknowledged_at.isoformat() if warning.acknowledged_at else None
        ),
    }


@pytest.fixture
def moderator(db: None) -> User:
    return make_moderator()


@pytest.fixture
def alice(db: None) -> User:
    return make_user("alice")


@pytest.fixture
def bob(db: None) -> User:
    return make_user("bob")


# --- The API ---------------------------------------------------------------------------------


def test_the_list_has_all_of_the_callers_warnings_newest_first(
    moderator: User, alice: User, bob: User
) -> None:
    older = warn(moderator, alice, "Please stop sending links.")
    AccountWarning.objects.filter(pk=older.pk).update(
        created_at=timezone.now() - timedelta(days=2), acknowledged_at=timezone.now()
    )
    newer = warn(moderator, alice, "Second time: no more links.")
    warn(moderator, bob, "Not for Alice.")

    response = api_for(alice).get("/api/v1/me/warnings")

    assert response.status_code == 200
    assert response.json() == {"results": [fields(newer), fields(older)]}
    assert response.json()["results"][1]["acknowledged_at"] is not None
    assert api_for(make_user("carol")).get("/api/v1/me/warnings").json() == {"results": []}


def test_acknowledging_a_warning(moderator: User, alice: User) -> None:
    warning = warn(moderator, alice, "Please stop sending links.")
    client = api_for(alice)

    response = client.post(f"/api/v1/me/warnings/{warning.pk}/acknowledge")

    assert response.status_code == 200
    body = response.json()
    warning.refresh_from_db()
    assert warning.acknowledged_at is not None
    assert body == fields(warning)
    assert body["text"] == "Please stop sending links."
    # Again changes nothing.
    again = client.post(f"/api/v1/me/warnings/{warning.pk}/acknowledge")
    assert again.status_code == 200
    assert again.json()["acknowledged_at"] == body["acknowledged_at"]


def test_someone_elses_or_no_warning_is_not_found(moderator: User, alice: User, bob: User) -> None:
    bobs = warn(moderator, bob, "For Bob only.")
    client = api_for(alice)

    for warning_id in (bobs.pk, bobs.pk + 1000, 2**70):
        response = client.post(f"/api/v1/me/warnings/{warning_id}/acknowledge")
        assert response.status_code == 404, warning_id
        assert response.json()["error"] == {
            "code": "warning_not_found",
            "message": "No such warning.",
            "field": "warning_id",
        }
    bobs.refresh_from_db()
    assert bobs.acknowledged_at is None


def test_anonymous_callers_are_refused(moderator: User, alice: User) -> None:
    warning = warn(moderator, alice, "Please stop.")
    client = APIClient()

    for response in (
        client.get("/api/v1/me/warnings"),
        client.post(f"/api/v1/me/warnings/{warning.pk}/acknowledge"),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "not_authenticated"
    warning.refresh_from_db()
    assert warning.acknowledged_at is None


def test_listing_is_one_query_past_authentication(
    moderator: User, alice: User, django_assert_num_queries: Any
) -> None:
    for note in ("One.", "Two.", "Three."):
        warn(moderator, alice, note)
    client = api_for(alice)  # force_authenticate: no token or session lookups

    with django_assert_num_queries(1):
        assert len(client.get("/api/v1/me/warnings").json()["results"]) == 3


# --- The banner ------------------------------------------------------------------------------


def test_the_banner_shows_until_acknowledged(moderator: User, alice: User, bob: User) -> None:
    warning = warn(moderator, alice, "Stop <b>spamming</b> & read the rules.")
    client = signed_in(alice)
    page = reverse("calls:history")

    html = client.get(page).content.decode()

    assert BANNER + "Stop &lt;b&gt;spamming&lt;/b&gt; &amp; read the rules." in html
    assert "<b>spamming</b>" not in html
    form = re.search(
        r'<form method="post" action="([^"]+)">(.*?)</form>', html.split(BANNER)[1], re.S
    )
    assert form is not None
    assert form.group(1) == f"/warnings/{warning.pk}/acknowledge"
    assert 'name="csrfmiddlewaretoken"' in form.group(2)
    assert f'name="next" value="{page}"' in form.group(2)
    assert "I understand" in form.group(2)
    assert "style=" not in html
    # Nobody else sees it.
    assert BANNER not in signed_in(bob).get(page).content.decode()
    assert BANNER not in Client().get(reverse("accounts:login")).content.decode()

    response = client.post(form.group(1), {"next": page}, follow=True)

    assert response.redirect_chain == [(page, 302)]
    assert BANNER not in response.content.decode()
    warning.refresh_from_db()
    assert warning.acknowledged_at is not None
    assert BANNER not in client.get(reverse("home")).content.decode()


def test_every_unacknowledged_warning_has_its_banner(moderator: User, alice: User) -> None:
    first = warn(moderator, alice, "First warning.")
    second = warn(moderator, alice, "Second warning.")
    client = signed_in(alice)

    html = client.get(reverse("home")).content.decode()
    assert html.count(BANNER) == 2
    assert html.index("Second warning.") < html.index("First warning.")

    client.post(f"/warnings/{second.pk}/acknowledge")
    html = client.get(reverse("home")).content.decode()
    assert html.count(BANNER) == 1
    assert "First warning." in html
    first.refresh_from_db()
    assert first.acknowledged_at is None


def test_the_acknowledge_form_refuses_what_it_should(
    moderator: User, alice: User, bob: User
) -> None:
    bobs = warn(moderator, bob, "For Bob only.")
    alices = warn(moderator, alice, "For Alice.")
    client = signed_in(alice)

    assert client.post(f"/warnings/{bobs.pk}/acknowledge").status_code == 404
    assert client.get(f"/warnings/{alices.pk}/acknowledge").status_code == 405
    anonymous = Client().post(f"/warnings/{alices.pk}/acknowledge")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("accounts:login"))
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice, backend="accounts.backends.HandleOrEmailBackend")
    assert strict.post(f"/warnings/{alices.pk}/acknowledge").status_code == 403
    for warning in (bobs, alices):
        warning.refresh_from_db()
        assert warning.acknowledged_at is None
    # A `next` off the site goes home instead.
    elsewhere = client.post(f"/warnings/{alices.pk}/acknowledge", {"next": "https://evil.example/"})
    assert elsewhere.status_code == 302
    assert elsewhere["Location"] == reverse("home")


def test_the_banner_costs_one_query_when_shown_and_none_for_anyone_else(
    moderator: User, alice: User, django_assert_num_queries: Any
) -> None:
    warn(moderator, alice, "Please stop.")
    request = RequestFactory().get("/")
    request.user = alice

    with django_assert_num_queries(0):
        context = warnings_context(request)
    with django_assert_num_queries(1):
        shown = list(context["account_warnings"])  # type: ignore[call-overload]
    assert [warning.text for warning in shown] == ["Please stop."]

    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    with django_assert_num_queries(0):
        assert not list(warnings_context(request)["account_warnings"])  # type: ignore[call-overload]


# --- The event -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_the_warning_reaches_the_users_sockets_and_no_one_elses() -> None:
    alice, bob = await sync_to_async(person)("alice"), await sync_to_async(person)("bob")
    moderator = await sync_to_async(make_moderator)()
    alices, bobs = await connect(alice.phones[0]), await connect(bob.phones[0])

    warning = await sync_to_async(warn)(moderator, alice.user, "Please stop sending links.")

    event = await alices.receive_json_from(timeout=5)
    assert event == {"type": "account.warning", "warning": await sync_to_async(fields)(warning)}
    assert event["warning"]["acknowledged_at"] is None
    assert await bobs.receive_nothing(timeout=0.3), "others hear nothing"
    await alices.disconnect()
    await bobs.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_opened_later_gets_the_unacknowledged_warnings_in_its_hello() -> None:
    """A warning given while the client was away shows when it reconnects, with no
    request of its own (the hello carries it)."""
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    alice = await sync_to_async(person)("alice")
    moderator = await sync_to_async(make_moderator)()
    first = await sync_to_async(warn)(moderator, alice.user, "First.")
    second = await sync_to_async(warn)(moderator, alice.user, "Second.")
    await sync_to_async(warning_acknowledge)(user=alice.user, warning_id=first.pk)
    phone = alice.phones[0]
    socket = WebsocketCommunicator(
        application,
        f"/ws/?device={phone.device.pk}",
        headers=[(b"authorization", f"Bearer {phone.key}".encode())],
    )
    connected, _ = await socket.connect()
    assert connected
    hello = await socket.receive_json_from()
    assert hello["type"] == "hello"
    assert hello["account_warnings"] == [await sync_to_async(fields)(second)]
    await socket.disconnect()
