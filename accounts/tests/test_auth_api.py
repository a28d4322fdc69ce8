"""Sign-up, sign-in, tokens and the lockout over the API."""

import pytest
from rest_framework.test import APIClient

from accounts.models import ApiToken, SecurityEvent, User
from accounts.tests.factories import PASSWORD, api_client_for, make_user

pytestmark = pytest.mark.django_db


def signup(client: APIClient, **fields):
    body = {"handle": "alice", "email": "alice@example.com", "password": PASSWORD, **fields}
    return client.post("/api/v1/auth/signup", body, format="json")


def test_signup_returns_a_working_token() -> None:
    client = APIClient()
    response = signup(client, display_name="Alice", token_name="Pixel")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["user"]["handle"] == "alice"
    assert body["token"]["key"].startswith("parley_")
    token = ApiToken.objects.get()
    assert token.key_hash != body["token"]["key"], "only a hash is stored"
    assert body["token"]["key"] not in str(ApiToken.objects.values_list())
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']['key']}")
    assert client.get("/api/v1/me").json()["email"] == "alice@example.com"


def test_passwords_are_hashed_with_argon2() -> None:
    signup(APIClient())
    assert User.objects.get().password.startswith("argon2$")


@pytest.mark.parametrize(
    ("fields", "field", "code"),
    [
        ({"handle": "has space"}, "handle", "invalid_handle"),
        ({"handle": "sixteen_chars_xx"}, "handle", "invalid_handle"),
        ({"handle": "héllo"}, "handle", "invalid_handle"),
        ({"handle": ""}, "handle", "blank"),
        ({"handle": "Admin"}, "handle", "handle_reserved"),
        ({"handle": "settings"}, "handle", "handle_reserved"),
        ({"email": "not-an-email"}, "email", "invalid_email"),
        ({"password": "short"}, "password", "weak_password"),
        ({"password": "1234567890123"}, "password", "weak_password"),
        ({"password": "password1234"}, "password", "weak_password"),
        ({"password": None}, "password", "null"),
    ],
)
def test_signup_refusals_name_the_field_and_store_nothing(fields, field, code) -> None:
    response = signup(APIClient(), **fields)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert (error["field"], error["code"]) == (field, code)
    assert error["message"]
    assert not User.objects.exists()


def test_handle_taken_in_another_case() -> None:
    make_user("Alice")
    response = signup(APIClient(), handle="aLICE", email="other@example.com")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "handle_taken",
        "message": "That handle is taken.",
        "field": "handle",
    }
    assert User.objects.count() == 1


def test_email_taken_in_another_case() -> None:
    make_user("alice")
    response = signup(APIClient(), handle="alice2", email="ALICE@example.com")
    assert response.status_code == 409
    assert response.json()["error"]["field"] == "email"


def test_malformed_json_is_a_clear_400() -> None:
    response = APIClient().post(
        "/api/v1/auth/signup", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_login_by_handle_in_any_case_or_email() -> None:
    make_user("Alice")
    client = APIClient()
    for login in ("alice", "@ALICE", "alice@example.com", "ALICE@EXAMPLE.COM"):
        response = client.post(
            "/api/v1/auth/login", {"login": login, "password": PASSWORD}, format="json"
        )
        assert response.status_code == 200, (login, response.content)
    assert ApiToken.objects.count() == 4, "one token per sign-in (per app install)"


def test_wrong_password_is_refused_without_saying_which_part() -> None:
    make_user("alice")
    client = APIClient()
    wrong = client.post("/api/v1/auth/login", {"login": "alice", "password": "nope"}, format="json")
    unknown = client.post(
        "/api/v1/auth/login", {"login": "nobody", "password": "nope"}, format="json"
    )
    assert wrong.status_code == unknown.status_code == 400
    assert wrong.json() == unknown.json()


def test_lockout_per_account_after_repeated_failures() -> None:
    make_user("alice")
    client = APIClient()
    for _ in range(5):
        client.post("/api/v1/auth/login", {"login": "alice", "password": "wrong"}, format="json")
    locked = client.post(
        "/api/v1/auth/login", {"login": "ALICE", "password": PASSWORD}, format="json"
    )
    assert locked.status_code == 429
    assert locked.json()["error"]["code"] == "locked_out"
    assert int(locked["Retry-After"]) > 0
    # Another account from the same address is not locked by alice's failures.
    make_user("bob")
    bob = client.post("/api/v1/auth/login", {"login": "bob", "password": PASSWORD}, format="json")
    assert bob.status_code == 200


def test_handle_and_email_share_one_allowance() -> None:
    make_user("alice")
    client = APIClient()
    for login in ("alice", "alice@example.com", "@Alice", "ALICE@example.com", "alice"):
        client.post("/api/v1/auth/login", {"login": login, "password": "wrong"}, format="json")
    locked = client.post(
        "/api/v1/auth/login", {"login": "alice@example.com", "password": PASSWORD}, format="json"
    )
    assert locked.status_code == 429
    assert SecurityEvent.objects.filter(kind="locked_out").count() == 1


def test_guessing_the_current_password_locks_too() -> None:
    user = make_user("alice")
    client, _ = api_client_for(user)
    body = {"old_password": "guess", "new_password": "another fine passphrase"}
    codes = [
        client.post("/api/v1/auth/password", body, format="json").status_code for _ in range(6)
    ]
    assert codes == [400] * 5 + [429]
    right = {**body, "old_password": PASSWORD}
    assert client.post("/api/v1/auth/password", right, format="json").status_code == 429
    user.refresh_from_db()
    assert user.check_password(PASSWORD), "nothing changed while locked"


def test_lockout_per_address(settings) -> None:
    settings.LOGIN_LOCKOUT = {**settings.LOGIN_LOCKOUT, "ADDRESS_FAILURES": 6}
    make_user("alice")
    client = APIClient(REMOTE_ADDR="203.0.113.9")
    for index in range(6):
        client.post(
            "/api/v1/auth/login", {"login": f"guess{index}", "password": "x"}, format="json"
        )
    blocked = client.post(
        "/api/v1/auth/login", {"login": "alice", "password": PASSWORD}, format="json"
    )
    assert blocked.status_code == 429
    elsewhere = APIClient(REMOTE_ADDR="198.51.100.7").post(
        "/api/v1/auth/login", {"login": "alice", "password": PASSWORD}, format="json"
    )
    assert elsewhere.status_code == 200


def test_success_resets_the_account_counter() -> None:
    make_user("alice")
    client = APIClient()
    for _ in range(4):
        client.post("/api/v1/auth/login", {"login": "alice", "password": "wrong"}, format="json")
    assert (
        client.post(
            "/api/v1/auth/login", {"login": "alice", "password": PASSWORD}, format="json"
        ).status_code
        == 200
    )
    for _ in range(4):
        client.post("/api/v1/auth/login", {"login": "alice", "password": "wrong"}, format="json")
    assert (
        client.post(
            "/api/v1/auth/login", {"login": "alice", "password": PASSWORD}, format="json"
        ).status_code
        == 200
    )


def test_suspended_account_is_refused_with_a_clear_message() -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.services import user_suspend

    user = make_user("alice")
    client, _ = api_client_for(user)
    user_suspend(user=user, until=timezone.now() + timedelta(days=3))
    response = APIClient().post(
        "/api/v1/auth/login", {"login": "alice", "password": PASSWORD}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"
    assert client.get("/api/v1/me").status_code == 401, "tokens stop working at once"


def test_logout_revokes_only_the_current_token() -> None:
    user = make_user("alice")
    phone, _ = api_client_for(user, "phone")
    tablet, _ = api_client_for(user, "tablet")
    assert phone.post("/api/v1/auth/logout").status_code == 204
    assert phone.get("/api/v1/me").status_code == 401
    assert tablet.get("/api/v1/me").status_code == 200


def test_tokens_list_and_revoke() -> None:
    user = make_user("alice")
    client, own = api_client_for(user, "phone")
    _, other = api_client_for(user, "old tablet")
    names = {token["name"] for token in client.get("/api/v1/auth/tokens").json()["results"]}
    assert names == {"phone", "old tablet"}
    assert client.delete(f"/api/v1/auth/tokens/{other.pk}").status_code == 204
    other.refresh_from_db()
    assert other.revoked_at is not None
    stranger, _ = api_client_for(make_user())
    assert stranger.delete(f"/api/v1/auth/tokens/{own.pk}").status_code == 404


def test_change_password() -> None:
    user = make_user("alice")
    client, _ = api_client_for(user)
    bad = client.post(
        "/api/v1/auth/password",
        {"old_password": "wrong", "new_password": "another fine passphrase"},
        format="json",
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "old_password"
    weak = client.post(
        "/api/v1/auth/password", {"old_password": PASSWORD, "new_password": "123"}, format="json"
    )
    assert weak.status_code == 400 and weak.json()["error"]["field"] == "new_password"
    ok = client.post(
        "/api/v1/auth/password",
        {"old_password": PASSWORD, "new_password": "another fine passphrase"},
        format="json",
    )
    assert ok.status_code == 204
    user.refresh_from_db()
    assert user.check_password("another fine passphrase")


def test_bad_bearer_tokens() -> None:
    for header in ("Bearer", "Bearer parley_nope", "Bearer a b", "Bearer \u00e9"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=header)
        response = client.get("/api/v1/me")
        assert response.status_code == 401, header
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] == "authentication_failed"


def test_openapi_schema_and_docs_page() -> None:
    client = APIClient()
    schema = client.get("/api/v1/schema", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    document = schema.json()
    for path in ("/api/v1/auth/signup", "/api/v1/devices", "/api/v1/users/{handle}/keys"):
        assert path in document["paths"]
    components = document["components"]["schemas"]
    assert "phone_number" not in components["Me"]["properties"], "write-only"
    assert "phone_number" in components["PatchedMeInputRequest"]["properties"]
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert client.get("/api/v1/docs").status_code == 200


def test_unknown_api_path_answers_json_404() -> None:
    response = APIClient().get("/api/v1/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
