"""Private data stays private: the phone number and key material appear on no page,
API response, admin page or log line; e-mail only to its owner."""

import logging
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import api_client_for, give_identity, make_device, make_user
from common.encoding import b64u_encode

pytestmark = pytest.mark.django_db

PHONE = "+15550001234"
PHONE_MARKERS = ("15550001234", "5550001234", "555000")


def assert_absent(text: str, markers: tuple[str, ...], where: str) -> None:
    for marker in markers:
        assert marker not in text, f"{marker!r} leaked in {where}"


def test_phone_number_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = make_user("alice", display_name="Alice")
    client, _ = api_client_for(alice)
    set_response = client.patch("/api/v1/me", {"phone_number": PHONE}, format="json")
    assert set_response.status_code == 200
    alice.refresh_from_db()
    assert alice.phone_number == PHONE, "it is stored, for the owner's own use later"
    assert set_response.json()["has_phone_number"] is True

    bad = client.patch("/api/v1/me", {"phone_number": PHONE + "999999"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "phone_number"

    viewer_client, _ = api_client_for(make_user("viewer"))
    admin = User.objects.create_superuser("boss", "boss@example.com", "a long admin password")
    site = Client()
    site.force_login(alice)
    panel = Client()
    panel.force_login(admin)
    pages: dict[str, Any] = {
        "own /me": client.get("/api/v1/me"),
        "bad update": bad,
        "profile API": viewer_client.get("/api/v1/users/alice"),
        "search API": viewer_client.get("/api/v1/users", {"q": "ali"}),
        "schema": APIClient().get("/api/v1/schema"),
        "profile page": site.get("/@alice"),
        "own settings page": site.get("/settings/profile"),
        "admin user list": panel.get("/admin/accounts/user/"),
        "admin user page": panel.get(f"/admin/accounts/user/{alice.pk}/change/"),
    }
    for where, response in pages.items():
        # A page that failed would show nothing, proving nothing: each must be the real one.
        assert response.status_code == (400 if where == "bad update" else 200), where
        assert_absent(response.content.decode(), PHONE_MARKERS, where)
    # Searching the panel by phone number finds nobody: it is not a search field.
    search = panel.get("/admin/accounts/user/", {"q": PHONE}).content.decode()
    assert "0 users" in search
    assert_absent(caplog.text, PHONE_MARKERS, "logs")


def test_email_is_shown_only_to_its_owner() -> None:
    alice = make_user("alice")
    viewer_client, _ = api_client_for(make_user("viewer"))
    assert "alice@example.com" not in viewer_client.get("/api/v1/users/alice").content.decode()
    assert "alice@example.com" not in viewer_client.get("/api/v1/users?q=al").content.decode()
    assert "alice@example.com" not in viewer_client.get("/api/v1/users/alice/keys").content.decode()
    site = Client()
    site.force_login(User.objects.get(handle="viewer"))
    assert "alice@example.com" not in site.get("/@alice").content.decode()
    own, _ = api_client_for(alice)
    assert own.get("/api/v1/me").json()["email"] == "alice@example.com"


def test_admin_shows_no_key_material() -> None:
    alice = make_user("alice")
    aik = give_identity(alice)
    device, keys = make_device(alice, aik)
    admin = User.objects.create_superuser("boss", "boss@example.com", "a long admin password")
    panel = Client()
    panel.force_login(admin)
    secrets_in_b64 = (
        b64u_encode(bytes(aik.verify_key)),
        b64u_encode(bytes(keys.sign.verify_key)),
        b64u_encode(bytes(keys.box.public_key)),
        b64u_encode(bytes(device.certificate)),
    )
    for url in (
        "/admin/accounts/user/",
        f"/admin/accounts/user/{alice.pk}/change/",
        "/admin/accounts/device/",
        f"/admin/accounts/device/{device.pk}/change/",
    ):
        response = panel.get(url)
        assert response.status_code == 200, url
        assert_absent(response.content.decode(), secrets_in_b64, url)
    assert panel.get("/admin/accounts/identitykey/").status_code == 404, "no admin for keys"
    assert panel.get("/admin/accounts/keybackup/").status_code == 404, "no admin for backups"


def test_admin_cannot_bypass_services() -> None:
    """Suspending and revoking happen through services, which close sockets and revoke
    tokens; the panel may not edit or delete those rows directly."""
    alice = make_user("alice")
    device, _ = make_device(alice, give_identity(alice))
    admin = User.objects.create_superuser("boss", "boss@example.com", "a long admin password")
    panel = Client()
    panel.force_login(admin)
    page = panel.get(f"/admin/accounts/user/{alice.pk}/change/").content.decode()
    assert 'name="is_active"' not in page
    assert 'name="suspended_until' not in page
    assert panel.get(f"/admin/accounts/device/{device.pk}/delete/").status_code == 403
    assert panel.get("/admin/accounts/user/add/").status_code == 403


def test_a_moderator_cannot_promote_anyone() -> None:
    """Users change only through moderation actions; roles only by staff admins."""
    from moderation.roles import MODERATORS, STAFF_ADMINS
    from moderation.tests.support import staff

    moderator = staff(MODERATORS, "mod_anna")
    panel = Client()
    panel.force_login(moderator)
    url = f"/admin/accounts/user/{moderator.pk}/change/"
    page = panel.get(url).content.decode()
    assert 'name="is_superuser"' not in page
    assert 'name="is_staff"' not in page
    assert 'name="role"' not in page
    response = panel.post(url, {"display_name": "x", "is_superuser": "on", "is_staff": "on",
                                "dm_policy": "everyone", "call_policy": "following"})  # fmt: skip
    assert response.status_code == 403
    for role in (MODERATORS, STAFF_ADMINS):
        refused = panel.post(
            f"/admin/accounts/user/{moderator.pk}/role/",
            {"role": role, "grant": "1", "reason": "me"},
        )
        assert refused.status_code == 403
    moderator.refresh_from_db()
    assert moderator.display_name == ""
    assert moderator.is_superuser is False
    assert list(moderator.groups.values_list("name", flat=True)) == [MODERATORS]
