"""schemathesis over the whole OpenAPI schema of the mobile API, in-process (WSGI).

Every operation the schema at /api/v1/schema names is fuzzed, with data that fits the
schema and with data that does not, by a signed-in user who owns a device with keys,
conversations, a message, an attachment, a device link, a call and a warning: the
path parameters are most often those real ids, so that requests get past 401 and 404
into validation. No answer may be a 5xx, and every answer must be one the schema
documents (status code, content type, body).

Each example runs in a savepoint that is rolled back after it, so every example starts
from the same world: operations that end the session (logout, revoking the request's
own token or device) can run in any order without locking the later ones out.
"""

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import services as account_services
from calls.models import Call
from calls.tests.support import make_call
from config.wsgi import application
from messaging.models import Attachment, Message
from messaging.tests.support import Person, person
from moderation.tests.test_warnings import make_moderator, warn
from notifications.tests.support import group, send

pytestmark = pytest.mark.django_db

SCHEMA_URL = "/api/v1/schema?format=json"
# Examples per operation and generation mode (positive and negative): small, so that the
# whole file runs in well under a minute; derandomized, so that every run sends the same.
MAX_EXAMPLES = 6
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Live limits would stop the fuzz after a few requests (docs/api.md, "Throttles").
GENEROUS = "1000000/min"


def load_schema() -> Any:
    return schemathesis.openapi.from_wsgi(SCHEMA_URL, application)


def schema_operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


# The operations are read from the served schema when the tests are collected, so a new
# endpoint gets its own fuzz test without anyone listing it.
SCHEMA = load_schema()
OPERATIONS = sorted(operation.label for operation in schema_operations(SCHEMA))


@dataclass
class World:
    """Alice, the caller, and what she owns; ``path_values`` are real ids by the name
    of the path parameter that takes them."""

    alice: Person
    bob: Person
    key: str
    path_values: dict[str, str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_world() -> World:
    """Alice with a device and keys, admin of a group with Bob and Carol that has a
    message and an attachment; a spare token with a device link in progress, a call
    and a moderator's warning."""
    alice, bob, carol = person(), person(), person()
    account_services.user_follow(follower=alice.user, followee=bob.user)
    conversation_id = group(alice, [bob, carol])
    send(alice, conversation_id, [alice, bob, carol])
    message = Message.objects.filter(conversation_id=conversation_id).get()
    upload = alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/attachments",
        {"blob": _blob()},
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    attachment = Attachment.objects.get()
    spare_token, _ = account_services.api_token_create(user=alice.user, name="laptop")
    link = account_services.device_link_request(
        user=alice.user, commitment=uuid.uuid4().bytes * 2, token=spare_token, session_key=None
    )
    call = make_call(alice, bob, Call.State.RINGING)
    warning = warn(make_moderator(), alice.user, "Please stop.")
    phone = alice.phones[0]
    return World(
        alice=alice,
        bob=bob,
        key=phone.key,
        path_values={
            "conversation_id": conversation_id,
            "handle": bob.user.handle,
            "user_id": str(bob.user.pk),
            "message_id": str(message.pk),
            "attachment_id": str(attachment.pk),
            "token_id": str(spare_token.pk),
            "device_id": str(phone.device.pk),
            "link_id": str(link.pk),
            "call_id": str(call.pk),
            "warning_id": str(warning.pk),
        },
    )


def _blob() -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("blob", b"\x01" * 64, content_type="application/octet-stream")


@pytest.fixture
def world() -> World:
    return make_world()


@pytest.fixture
def generous_limits(settings: Any) -> None:
    settings.API_THROTTLE_RATES = dict.fromkeys(settings.API_THROTTLE_RATES, GENEROUS)
    settings.LOGIN_LOCKOUT = {**settings.LOGIN_LOCKOUT, "ACCOUNT_FAILURES": 1000000,
                              "ADDRESS_FAILURES": 1000000}  # fmt: skip


@contextmanager
def connection_kept_open() -> Iterator[None]:
    """Django's WSGI handler closes the database connection after each request, which
    would end the test's transaction; Django's own test client keeps it the same way
    (and reconnects the handler after each of its requests, so this wraps the calls)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def rolled_back(send_request: Callable[[], Any]) -> Any:
    """Run one example in a savepoint that is then undone (see the module docstring)."""
    with connection_kept_open(), transaction.atomic():
        try:
            return send_request()
        finally:
            transaction.set_rollback(True)
            cache.clear()


def test_every_operation_in_the_served_schema_is_fuzzed() -> None:
    with connection_kept_open():
        served = sorted(operation.label for operation in schema_operations(load_schema()))
    assert served == OPERATIONS
    assert len(OPERATIONS) >= 75, "the API has at least 75 operations; is the schema whole?"


@pytest.mark.parametrize("label", OPERATIONS)
@pytest.mark.usefixtures("generous_limits")
def test_no_operation_answers_a_server_error_or_outside_its_schema(
    label: str, world: World
) -> None:
    operation = SCHEMA.find_operation_by_label(label)
    assert operation is not None
    real = {
        name: world.path_values[name]
        for name in (parameter.name for parameter in operation.path_parameters)
    }
    statuses: list[int] = []

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies = [operation.as_strategy(generation_mode=mode)]
        if real:
            strategies.insert(0, operation.as_strategy(generation_mode=mode, path_parameters=real))

        @given(case=st.one_of(strategies))
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: Any) -> None:
            def call() -> Any:
                response = case.call(headers=world.headers)
                statuses.append(response.status_code)
                case.validate_response(response, checks=CHECKS, headers=world.headers)

            rolled_back(call)

        fuzz()

    assert statuses, "no request was sent"
    assert any(status != 401 for status in statuses), "every request was refused as unsigned"
