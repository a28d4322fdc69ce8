"""Reporting a profile: the API (POST /api/v1/users/{handle}/report) and the profile
page's Report form (POST /@handle/report)."""

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import make_user
from messaging.models import Report

pytestmark = pytest.mark.django_db

THANKS = "Reported. Thank you: our moderators will look at it."


def api_for(user: User) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.HandleOrEmailBackend")
    return client


def report(client: APIClient, handle: str, **body: Any) -> Any:
    return client.post(f"/api/v1/users/{handle}/report", body, format="json")


@pytest.fixture
def alice() -> User:
    user = make_user("alice", display_name="Alice A.")
    account_services.user_update_profile(user=user, bio="Buy cheap watches")
    return user


@pytest.fixture
def bob() -> User:
    return make_user("bob")


# --- The API ---------------------------------------------------------------------------------


def test_a_profile_report_is_stored_with_the_profile_as_it_was(alice: User, bob: User) -> None:
    response = report(api_for(bob), "@ALICE", reason="spam", comment="  Sells watches.  ")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "kind", "created_at"}
    assert body["kind"] == "profile"
    stored = Report.objects.get()
    assert str(stored.pk) == body["id"]
    assert stored.kind == Report.Kind.PROFILE
    assert stored.reporter == bob
    assert stored.reported_user == alice
    assert stored.reason == "spam"
    assert stored.comment == "Sells watches."
    assert stored.message is None
    assert stored.status == Report.Status.OPEN
    assert stored.profile_snapshot == {
        "handle": "alice",
        "display_name": "Alice A.",
        "bio": "Buy cheap watches",
        "avatar": "",
    }
    # The snapshot stays as it was when the profile changes afterwards.
    account_services.user_update_profile(user=alice, bio="Nothing to see")
    stored.refresh_from_db()
    assert stored.profile_snapshot["bio"] == "Buy cheap watches"


def test_the_comment_is_optional(alice: User, bob: User) -> None:
    response = report(api_for(bob), "alice", reason="impersonation")

    assert response.status_code == 201
    assert Report.objects.get().comment == ""


def test_a_second_open_report_of_the_same_profile_is_a_conflict(alice: User, bob: User) -> None:
    client = api_for(bob)
    assert report(client, "alice", reason="spam").status_code == 201

    response = report(client, "alice", reason="harassment")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "already_reported"
    assert response.json()["error"]["field"] == "handle"
    assert Report.objects.count() == 1
    # Someone else may still report the same profile.
    assert report(api_for(make_user("carol")), "alice", reason="spam").status_code == 201
    assert Report.objects.count() == 2


def test_reporting_yourself_is_refused(bob: User) -> None:
    response = report(api_for(bob), "bob", reason="spam")

    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "self_target",
        "message": "You cannot report yourself.",
        "field": "handle",
    }
    assert not Report.objects.exists()


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"reason": "rude"}, "reason", "invalid_choice"),
        ({}, "reason", "required"),
        ({"reason": "spam", "comment": "x" * 1001}, "comment", "max_length"),
    ],
)
def test_bad_input_names_its_field(
    alice: User, bob: User, body: dict[str, Any], field: str, code: str
) -> None:
    response = report(api_for(bob), "alice", **body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == field
    assert error["code"] == code
    assert not Report.objects.exists()


def test_unknown_and_banned_users_are_not_found_and_a_block_does_not_stop_a_report(
    alice: User, bob: User
) -> None:
    carol = make_user("carol")
    account_services.user_block(blocker=carol, blocked=bob)
    dave = make_user("dave")
    account_services.user_ban(user=dave)
    client = api_for(bob)

    for handle in ("nobody", "dave", "bad%20handle"):
        response = report(client, handle, reason="spam")
        assert response.status_code == 404, handle
        assert response.json()["error"]["code"] == "user_not_found"
        assert response.json()["error"]["field"] == "handle"
    assert not Report.objects.exists()
    # Harassers often block the people they harass: Bob can still report Carol, and
    # the blocker can report whom they blocked.
    assert report(client, "carol", reason="harassment").status_code == 201
    assert report(api_for(carol), "bob", reason="harassment").status_code == 201


def test_anonymous_callers_are_refused(alice: User) -> None:
    response = report(APIClient(), "alice", reason="spam")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert not Report.objects.exists()


def test_profile_reports_are_throttled_as_reports(alice: User, bob: User, settings: Any) -> None:
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "reports": "1/min"}
    client = api_for(bob)
    assert report(client, "alice", reason="spam").status_code == 201

    response = report(client, "alice", reason="spam")

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"


def test_the_route_does_not_shadow_the_profile(alice: User, bob: User) -> None:
    client = api_for(bob)

    assert client.get("/api/v1/users/alice").json()["handle"] == "alice"
    assert client.get("/api/v1/users/alice/report").status_code == 405


# --- The website -----------------------------------------------------------------------------


def test_the_profile_shows_a_report_form_to_others_only(alice: User, bob: User) -> None:
    html = signed_in(bob).get(reverse("accounts:profile", args=["alice"])).content.decode()

    assert '<details class="report-profile">' in html
    assert 'action="/@alice/report"' in html
    # Every reason of the model, with its label, and nothing else.
    options = re.findall(r'<option value="([^"]+)">([^<]+)</option>', html)
    assert options == list(Report.Reason.choices)
    assert 'for="report-reason"' in html and 'for="report-comment"' in html
    own = signed_in(alice).get(reverse("accounts:profile", args=["alice"])).content.decode()
    assert "report-profile" not in own


def test_the_report_form_reports_and_says_thank_you(alice: User, bob: User) -> None:
    client = signed_in(bob)

    response = client.post(
        "/@Alice/report", {"reason": "harassment", "comment": "Rude bio"}, follow=True
    )

    assert response.redirect_chain == [("/@alice", 302)]
    assert THANKS in response.content.decode()
    stored = Report.objects.get()
    assert (stored.kind, stored.reporter, stored.reported_user) == ("profile", bob, alice)
    assert (stored.reason, stored.comment) == ("harassment", "Rude bio")
    assert stored.profile_snapshot["bio"] == "Buy cheap watches"


def test_the_report_form_shows_the_refusal(alice: User, bob: User) -> None:
    client = signed_in(bob)
    assert THANKS in client.post("/@alice/report", {"reason": "spam"}, follow=True).content.decode()

    again = client.post("/@alice/report", {"reason": "spam"}, follow=True)
    unknown_reason = client.post("/@alice/report", {"reason": "rude"}, follow=True)

    assert again.redirect_chain == [("/@alice", 302)]
    html = again.content.decode()
    assert "You already reported this profile" in html
    assert THANKS not in html
    assert "Unknown reason." in unknown_reason.content.decode()
    assert Report.objects.count() == 1


def test_reporting_yourself_on_the_site_is_refused(bob: User) -> None:
    response = signed_in(bob).post("/@bob/report", {"reason": "spam"}, follow=True)

    assert "You cannot report yourself." in response.content.decode()
    assert not Report.objects.exists()


def test_the_report_form_is_post_only_signed_in_and_csrf_protected(alice: User, bob: User) -> None:
    assert signed_in(bob).get("/@alice/report").status_code == 405

    anonymous = Client().post("/@alice/report", {"reason": "spam"})
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("accounts:login"))

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(bob, backend="accounts.backends.HandleOrEmailBackend")
    assert strict.post("/@alice/report", {"reason": "spam"}).status_code == 403

    assert signed_in(bob).post("/@nobody/report", {"reason": "spam"}).status_code == 404
    assert not Report.objects.exists()
