"""Hostile bodies on every write operation of the mobile API: too large, nested thousands
deep, in a media type the API does not take, or broken JSON.

The operations are every POST, PUT, PATCH and DELETE of the served schema (so a new
endpoint is covered without anyone listing it), called by the owner of the objects in
the path so that the request reaches the parser. Each bad body gets a 4xx with the
error shape naming what is wrong, never a 500, and the database is left exactly as it
was.
"""

from dataclasses import dataclass
from typing import Any

import pytest
from rest_framework.test import APIClient

from common.testing import database_dump
from tests.test_api_schema_fuzz import (
    OPERATIONS,
    World,
    generous_limits,
    load_schema,
    make_world,
)

pytestmark = pytest.mark.django_db

__all__ = ["generous_limits"]  # a fixture, used by name

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
WRITE_OPERATIONS = [label for label in OPERATIONS if label.split()[0] in WRITE_METHODS]
# Operations that take files only (multipart/form-data): a JSON body is the wrong media
# type for them, and "too large" is a file over the upload's own limit.
UPLOADS = {
    operation.label: operation.body[0].definition["schema"]
    for operation in (result.ok() for result in load_schema().get_all_operations())
    if operation.body and {body.media_type for body in operation.body} == {"multipart/form-data"}
}
# Limits lowered for the test, so that "too large" stays small.
BODY_LIMIT = 64 * 1024
UPLOAD_LIMIT = 4 * 1024
DEPTH = 5000


@dataclass(frozen=True)
class BadBody:
    content_type: str
    body: bytes
    # (status, error code) answers that say what is wrong with this body.
    answers: frozenset[tuple[int, str]]


TOO_LARGE = frozenset({(413, "request_too_large")})
NOT_JSON = frozenset({(415, "unsupported_media_type")})
BROKEN = frozenset({(400, "parse_error")})

BAD_BODIES = {
    "too large": BadBody(
        "application/json", b'{"padding": "' + b"x" * BODY_LIMIT + b'"}', TOO_LARGE
    ),
    "nested thousands deep": BadBody(
        "application/json", b'{"a": ' + b"[" * DEPTH + b"]" * DEPTH + b"}", BROKEN
    ),
    "malformed JSON": BadBody("application/json", b'{"handle": "alice",', BROKEN),
    "text/plain": BadBody("text/plain", b"hello", NOT_JSON),
    "application/xml": BadBody("application/xml", b"<handle>alice</handle>", NOT_JSON),
    "form-encoded": BadBody(
        "application/x-www-form-urlencoded", b"handle=alice&password=x", NOT_JSON
    ),
}


def test_the_write_operations_are_enumerated_from_the_schema() -> None:
    assert len(WRITE_OPERATIONS) >= 45
    assert "POST /api/v1/conversations/{conversation_id}/messages" in WRITE_OPERATIONS


def path_for(label: str, world: World) -> str:
    path = label.split()[1]
    for name, value in world.path_values.items():
        path = path.replace(f"{{{name}}}", value)
    assert "{" not in path, f"no real value for a parameter of {label}"
    return path


def bad_bodies(label: str) -> dict[str, BadBody]:
    if label not in UPLOADS:
        return BAD_BODIES
    # JSON it cannot read may be refused as JSON (400) or as not a file (415); JSON it
    # can read is not a file.
    bodies = {
        kind: BadBody(bad.content_type, bad.body, bad.answers | NOT_JSON)
        for kind, bad in BAD_BODIES.items()
        if kind != "too large"
    }
    bodies["well-formed JSON"] = BadBody(
        "application/json", b'{"avatar": "x", "blob": "x"}', NOT_JSON
    )
    boundary = "BoUnDaRy"
    file_field = {"POST": "blob", "PUT": "avatar"}[label.split()[0]]
    upload = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"\x01" * (UPLOAD_LIMIT + 1)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    bodies["file too large"] = BadBody(
        f"multipart/form-data; boundary={boundary}",
        upload,
        frozenset({(413, "request_too_large"), (400, "file_too_large")}),
    )
    return bodies


def test_uploads_are_found_in_the_schema() -> None:
    assert set(UPLOADS) == {
        "POST /api/v1/conversations/{conversation_id}/attachments",
        "PUT /api/v1/me/avatar",
    }


@pytest.fixture
def small_limits(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = BODY_LIMIT
    settings.ATTACHMENT_MAX_BYTES = UPLOAD_LIMIT
    settings.AVATAR_MAX_BYTES = UPLOAD_LIMIT


@pytest.mark.parametrize("label", WRITE_OPERATIONS)
@pytest.mark.usefixtures("generous_limits", "small_limits")
def test_a_bad_body_gets_a_clear_4xx_and_stores_nothing(label: str) -> None:
    world = make_world()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {world.key}")
    method, path = label.split()[0].lower(), path_for(label, world)
    client.get("/api/v1/me")  # the token's last use is stamped now, not during the test
    problems: list[str] = []
    for kind, bad in bad_bodies(label).items():
        before = database_dump()
        response = getattr(client, method)(path, data=bad.body, content_type=bad.content_type)
        try:
            error = response.json()["error"]
            answer = (response.status_code, error["code"])
            said = bool(error["message"])
        except (ValueError, KeyError, TypeError):
            answer, said = (response.status_code, "(no error body)"), False
        if answer not in bad.answers or not said:
            problems.append(f"{kind}: {answer}, expected one of {sorted(bad.answers)}")
        if database_dump() != before:
            problems.append(f"{kind}: the database changed")
    assert not problems, f"{label}:\n" + "\n".join(problems)
