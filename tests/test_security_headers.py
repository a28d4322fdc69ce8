"""Every face of the site carries the security headers: website pages (signed in and
not), the mobile API (success and errors), the moderation panel, the error pages,
/healthz and the socket's HTTP side; and production adds HSTS, the HTTPS redirect and
secure cookies. Website pages are found from the URL patterns, so new pages are
covered without touching this file."""

import json
import subprocess
import sys
from typing import Any

import httpx
import pytest
import websockets
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, path
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tests.factories import PASSWORD, api_client_for, give_identity, make_user
from common.testing import ROOT, LiveServer, subprocess_env
from config import urls as site_urls

pytestmark = pytest.mark.django_db


# --- A URLconf with pages that fail, for the 500 pages --------------------------------------


def _fail(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a failing view, for the error page")


urlpatterns = [
    path("boom-for-the-test", _fail),
    path("api/v1/boom-for-the-test", _fail),
    *site_urls.urlpatterns,
]
handler404 = site_urls.handler404
handler500 = site_urls.handler500


# --- What every response must carry ---------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


def assert_security_headers(response: Any, where: str) -> None:
    """The headers every response needs, whatever its status or content type."""
    headers = response.headers
    assert headers.get("X-Content-Type-Options") == "nosniff", where
    assert headers.get("Referrer-Policy") in {
        "no-referrer",
        "same-origin",
        "strict-origin",
        "strict-origin-when-cross-origin",
    }, where
    assert headers.get("Cross-Origin-Opener-Policy") == "same-origin", where
    csp = csp_directives(headers.get("Content-Security-Policy", ""))
    assert headers.get("X-Frame-Options") == "DENY" or csp.get("frame-ancestors") == ["'none'"], (
        where
    )
    if "text/html" in headers.get("Content-Type", ""):
        assert_strict_csp(headers.get("Content-Security-Policy", ""), where)


def assert_strict_csp(header: str, where: str) -> None:
    """A policy that stops injected script: no inline script, no eval, no plugins, no
    framing, no base-uri tricks."""
    assert header, f"no Content-Security-Policy on {where}"
    directives = csp_directives(header)
    scripts = directives.get("script-src", directives.get("default-src"))
    assert scripts is not None, f"no script-src or default-src on {where}"
    assert "'unsafe-inline'" not in scripts, where
    assert "'unsafe-eval'" not in scripts, where
    assert "*" not in scripts and "data:" not in scripts, where
    assert directives.get("object-src") == ["'none'"], where
    assert directives.get("frame-ancestors") == ["'none'"], where
    assert directives.get("base-uri") in (["'none'"], ["'self'"]), where


def assert_not_stored_by_shared_caches(response: Any, where: str) -> None:
    cache_control = {
        part.strip().lower() for part in response.headers.get("Cache-Control", "").split(",")
    }
    assert cache_control & {"no-store", "private"}, f"{where}: {cache_control}"


# --- Website pages --------------------------------------------------------------------------


def website_paths_without_parameters() -> list[str]:
    """Every website URL pattern that takes no parameter (the API and the panel have
    their own tests below)."""
    found: list[str] = []

    def walk(patterns: list[URLPattern | URLResolver], prefix: str) -> None:
        for entry in patterns:
            route = str(entry.pattern)
            if entry.pattern.converters or "<" in route or "(" in route:
                continue
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, prefix + route)
            elif not getattr(entry, "default_args", None):
                found.append("/" + prefix + route)

    walk(get_resolver("config.urls").url_patterns, "")
    return sorted(p for p in set(found) if not p.startswith(("/api/", "/admin/")))


WEBSITE_PATHS = website_paths_without_parameters()
# The push service worker's script: the same for everyone, with its own Cache-Control.
SAME_FOR_EVERYONE = {"/sw.js"}


def test_the_page_list_finds_the_site_s_pages() -> None:
    # A walk that found nothing would make the tests below pass vacuously.
    for expected in ("/", "/login", "/signup", "/search", "/settings/profile", "/calls"):
        assert expected in WEBSITE_PATHS


@pytest.mark.parametrize("page", WEBSITE_PATHS)
def test_website_page_carries_the_security_headers_signed_out_and_in(page: str) -> None:
    anonymous = Client()
    response = anonymous.get(page)
    assert response.status_code < 500, page
    assert_security_headers(response, f"{page} (signed out)")

    user = make_user()
    give_identity(user)
    signed_in = Client()
    signed_in.force_login(user)
    response = signed_in.get(page)
    assert response.status_code < 500, page
    assert_security_headers(response, f"{page} (signed in)")
    if page not in SAME_FOR_EVERYONE:
        # Their own page: no shared cache keeps it, nor the browser after sign-out.
        assert_not_stored_by_shared_caches(response, f"{page} (signed in)")


def test_profile_page_and_its_forms_carry_the_security_headers() -> None:
    alice = make_user("alice")
    give_identity(alice)
    bob = make_user("bob")
    give_identity(bob)
    client = Client()
    client.force_login(bob)
    for page in ("/@alice", "/@alice/message", "/@alice/report"):
        response = client.get(page)
        assert response.status_code < 500, page
        assert_security_headers(response, page)
        assert_not_stored_by_shared_caches(response, page)


# --- The mobile API -------------------------------------------------------------------------


def test_api_success_and_error_responses_carry_the_headers_and_are_not_cached(
    settings: Any,
) -> None:
    alice = make_user("alice")
    client, _ = api_client_for(alice)
    responses: dict[str, tuple[int, Any]] = {
        "200 /me": (200, client.get("/api/v1/me")),
        "200 search": (200, client.get("/api/v1/users", {"q": "ali"})),
        "400 bad update": (400, client.patch("/api/v1/me", {"dm_policy": "?"}, format="json")),
        "401 no token": (401, APIClient().get("/api/v1/me")),
        "401 bad token": (
            401,
            APIClient(HTTP_AUTHORIZATION="Bearer parley_nope").get("/api/v1/me"),
        ),
        "404 unknown user": (404, client.get("/api/v1/users/nobody_here")),
        "404 unknown path": (404, client.get("/api/v1/no/such/thing")),
        "405 wrong method": (405, client.delete("/api/v1/users")),
    }
    settings.API_THROTTLE_RATES = {**settings.API_THROTTLE_RATES, "search": "1/min"}
    client.get("/api/v1/users", {"q": "a"})
    responses["429 throttled"] = (429, client.get("/api/v1/users", {"q": "a"}))
    for where, (status, response) in responses.items():
        assert response.status_code == status, (where, response.content)
        assert response["Content-Type"].startswith("application/json"), where
        assert_security_headers(response, where)
        assert_not_stored_by_shared_caches(response, where)
    assert responses["429 throttled"][1]["Retry-After"].isdigit()


def test_api_answers_to_a_website_session_are_not_cached() -> None:
    """The website's pages call the API with the session cookie: a shared cache keyed on
    the URL alone would hand one person's answer to the next."""
    alice = make_user("alice")
    client = Client()
    client.force_login(alice)
    response = client.get("/api/v1/me")
    assert response.status_code == 200
    assert_not_stored_by_shared_caches(response, "/api/v1/me with a session")


def test_api_schema_and_docs_carry_the_headers() -> None:
    schema = APIClient().get("/api/v1/schema")
    assert schema.status_code == 200
    assert_security_headers(schema, "schema")
    docs = Client().get("/api/v1/docs")
    assert docs.status_code == 200
    assert "text/html" in docs["Content-Type"]
    assert_security_headers(docs, "API docs")


# --- The moderation panel -------------------------------------------------------------------


def test_moderation_panel_carries_the_headers_signed_out_and_in() -> None:
    anonymous = Client()
    for page in ("/admin/login/", "/admin/"):
        response = anonymous.get(page)
        assert response.status_code in {200, 302}, page
        assert_security_headers(response, f"panel {page} (signed out)")

    admin = User.objects.create_superuser("boss", "boss@example.com", "a long admin password")
    make_user("alice")
    panel = Client()
    panel.force_login(admin)
    for page in ("/admin/", "/admin/accounts/user/", f"/admin/accounts/user/{admin.pk}/change/"):
        response = panel.get(page)
        assert response.status_code == 200, page
        assert_security_headers(response, f"panel {page}")


# --- Error pages and /healthz ---------------------------------------------------------------


@pytest.mark.urls(__name__)
def test_error_pages_carry_the_headers() -> None:
    client = Client(raise_request_exception=False)
    pages = {
        "site 404": (404, client.get("/no/such/page")),
        "site 500": (500, client.get("/boom-for-the-test")),
        "API 500": (500, client.get("/api/v1/boom-for-the-test")),
    }
    for where, (status, response) in pages.items():
        assert response.status_code == status, where
        assert_security_headers(response, where)
    assert "text/html" in pages["site 500"][1]["Content-Type"]
    assert pages["API 500"][1].json()["error"]["code"] == "server_error"
    assert_not_stored_by_shared_caches(pages["API 500"][1], "API 500")


def test_healthz_carries_the_headers_and_is_not_cached() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert_security_headers(response, "/healthz")
    assert_not_stored_by_shared_caches(response, "/healthz")


# --- The socket's HTTP side, through a live server ------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_socket_path_over_plain_http_carries_the_headers(daphne_server: LiveServer) -> None:
    """/ws/ without an upgrade is answered by Django like any other page."""
    async with httpx.AsyncClient(base_url=daphne_server.url) as client:
        response = await client.get("/ws/")
        health = await client.get("/healthz")
    assert response.status_code == 404
    assert_security_headers(response, "GET /ws/ without upgrade")
    assert_security_headers(health, "/healthz through Daphne")


@pytest.mark.django_db(transaction=True)
async def test_socket_upgrade_sets_no_cookie_and_names_no_server_software(
    daphne_server: LiveServer,
) -> None:
    """The 101 answer is not a document, so page headers (CSP, framing) do not apply to
    it; what does: it must not hand out cookies."""
    async with websockets.connect(f"{daphne_server.ws_url}/ws/?device=x") as ws:
        assert ws.response is not None
        headers = ws.response.headers
        assert ws.response.status_code == 101
        assert "Set-Cookie" not in headers
        closing = json.loads(await ws.recv())
        assert closing["type"] == "closing"  # no device named: refused after the upgrade


# --- Production -----------------------------------------------------------------------------

PRODUCTION_ENV = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": "k" * 20 + "-production-secret-for-the-test-only-0123456789",
    "FRANKING_SECRET": "f" * 20 + "-franking-secret-for-the-test-only-0123456789",
    "ALLOWED_HOSTS": "parley.example",
}

# Runs in a production-mode process on the test database. The static files of
# production come from collectstatic's manifest, which a test checkout has not built:
# only the storage is swapped, every security setting stays production's.
PRODUCTION_SCRIPT = r"""
import json
from django.test import Client, override_settings

def headers(response):
    return {k: v for k, v in response.headers.items()}

def cookies(response):
    return {
        name: {
            "secure": bool(morsel["secure"]),
            "httponly": bool(morsel["httponly"]),
            "samesite": morsel["samesite"],
        }
        for name, morsel in response.cookies.items()
    }

storage = {"default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
           "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
out = {}
with override_settings(STORAGES=storage):
    plain = Client(HTTP_HOST="parley.example")
    secure = Client(HTTP_HOST="parley.example", HTTP_X_FORWARDED_PROTO="https")
    for name, client, path in [
        ("http_page", plain, "/login"), ("http_api", plain, "/api/v1/me"),
        ("https_page", secure, "/login"), ("https_api_401", secure, "/api/v1/me"),
    ]:
        response = client.get(path)
        out[name] = {"status": response.status_code, "headers": headers(response),
                     "location": response.headers.get("Location"), "cookies": cookies(response)}
    token = secure.cookies["csrftoken"].value
    response = secure.post("/login", {"username": LOGIN, "login": LOGIN, "password": PASSWORD,
                                      "csrfmiddlewaretoken": token},
                           HTTP_REFERER="https://parley.example/login")
    out["sign_in"] = {"status": response.status_code, "headers": headers(response),
                      "cookies": cookies(response)}
    response = secure.get("/")
    out["signed_in_home"] = {"status": response.status_code, "headers": headers(response),
                             "cookies": cookies(response)}
print(json.dumps(out))
"""


@pytest.fixture
def production_answers(transactional_db: None) -> dict[str, Any]:
    user = make_user("carol")
    give_identity(user)
    script = f"LOGIN = {user.handle!r}\nPASSWORD = {PASSWORD!r}\n" + PRODUCTION_SCRIPT
    env = {**subprocess_env(), **PRODUCTION_ENV}
    env.pop("DEBUG", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-v", "0", "-c", script],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return answers


def test_production_redirects_plain_http_to_https(production_answers: dict[str, Any]) -> None:
    for name in ("http_page", "http_api"):
        answer = production_answers[name]
        assert answer["status"] == 301, name
        assert answer["location"].startswith("https://parley.example/"), name


def test_production_sends_hsts_and_the_security_headers_over_https(
    production_answers: dict[str, Any],
) -> None:
    for name in ("https_page", "https_api_401", "sign_in", "signed_in_home"):
        headers = production_answers[name]["headers"]
        hsts = headers.get("Strict-Transport-Security", "")
        assert "max-age=31536000" in hsts and "includeSubDomains" in hsts, name
        assert headers.get("X-Content-Type-Options") == "nosniff", name
        assert headers.get("X-Frame-Options") == "DENY", name
        assert headers.get("Cross-Origin-Opener-Policy") == "same-origin", name
        assert headers.get("Referrer-Policy"), name
    assert production_answers["https_page"]["status"] == 200
    assert_strict_csp(
        production_answers["https_page"]["headers"]["Content-Security-Policy"], "prod"
    )
    assert production_answers["https_api_401"]["status"] == 401


def test_production_cookies_are_secure_http_only_and_same_site(
    production_answers: dict[str, Any],
) -> None:
    csrf = production_answers["https_page"]["cookies"]["csrftoken"]
    assert production_answers["sign_in"]["status"] == 302, production_answers["sign_in"]
    session = production_answers["sign_in"]["cookies"]["sessionid"]
    for name, cookie in (("csrftoken", csrf), ("sessionid", session)):
        assert cookie["secure"], name
        assert cookie["httponly"], name
        assert cookie["samesite"].lower() in {"lax", "strict"}, name
    assert production_answers["signed_in_home"]["status"] in {200, 302}
