"""A call nobody answers becomes missed at its deadline, on a live server: the ring
timeout scheduled at invite time (a Celery worker on `make test-services`, the
server's own timer in the embedded default) ends it on both sides."""

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from calls.models import Call
from calls.tests.support import friends, offers_for
from common.testing import LiveServer
from messaging.tests.support import Phone

pytestmark = pytest.mark.django_db(transaction=True)

RING_SECONDS = 2


def open_socket(server: LiveServer, phone: Phone) -> ClientConnection:
    return connect(
        f"{server.ws_url}/ws/?device={phone.device.pk}",
        additional_headers={"Authorization": f"Bearer {phone.key}"},
        open_timeout=10,
    )


def next_of(socket: ClientConnection, kind: str, within: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        frame: dict[str, Any] = json.loads(socket.recv(timeout=deadline - time.monotonic()))
        if frame["type"] == kind:
            return frame


def test_a_call_nobody_answers_is_missed_on_both_sides(
    start_daphne: Callable[..., LiveServer],
) -> None:
    server = start_daphne(env={"CALL_RING_SECONDS": str(RING_SECONDS)})
    alice, bob = friends("alice", "bob")
    with (
        open_socket(server, alice.phones[0]) as caller,
        open_socket(server, bob.phones[0]) as callee,
    ):
        for socket in (caller, callee):
            assert next_of(socket, "hello")
        call_id = str(uuid.uuid4())
        caller.send(json.dumps({
            "type": "call.invite", "call_id": call_id, "callee": "bob", "media": "audio",
            "offers": offers_for(bob),
        }))  # fmt: skip
        assert next_of(caller, "call.ringing")["call_id"] == call_id
        assert next_of(callee, "call.incoming")["call_id"] == call_id
        rang_at = time.monotonic()
        for socket in (caller, callee):
            ended = next_of(socket, "call.ended")
            assert (ended["call_id"], ended["state"], ended["reason"]) == (
                call_id, "missed", "timeout",
            )  # fmt: skip
        assert time.monotonic() - rang_at >= RING_SECONDS - 0.5  # not before the deadline
    stored = Call.objects.get(pk=call_id)
    assert (stored.state, stored.end_reason, stored.offers) == ("missed", "timeout", {})
    (row,) = bob.phones[0].api.get("/api/v1/calls").json()["results"]
    assert row["missed"] is True
