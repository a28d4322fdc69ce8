"""Fuzzed socket frames (hypothesis): whatever a client sends, every answer is an event
of the documented shape, none is a server error, and the socket stays open.

Frames are drawn from every registered type with fields of any JSON shape, from JSON
that is not a frame, from text that is not JSON, and from binary frames.
"""

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts import services
from accounts.tests.factories import give_identity, make_device, make_user
from config.asgi import application
from realtime.registry import registered_types

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = ["id", "conversation_id", "seq", "envelope", "call_id", "device", "sdp", "candidate",
          "answer", "offer", "reason", "message_id", "to_device", "media"]  # fmt: skip

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.uuids().map(str)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=15,
)
registered = st.deferred(lambda: st.sampled_from(registered_types()))
fields = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=5)
# Frames of the types the server handles, with fields of any shape: most of the draws.
handled_frames = st.builds(lambda kind, rest: {**rest, "type": kind}, registered, fields).map(
    json.dumps
)
odd_frames = st.one_of(
    st.builds(lambda kind, rest: {**rest, "type": kind}, json_scalars, fields).map(json.dumps),
    json_values.map(json.dumps),
    st.text(min_size=1, max_size=120),  # the test client cannot send an empty frame
    st.binary(min_size=1, max_size=64),
    st.integers(min_value=1, max_value=200).map(lambda depth: "[" * depth + "]" * depth),
)
frames = st.one_of(handled_frames, handled_frames, handled_frames, odd_frames)


@pytest.fixture
def socket_user() -> dict[str, Any]:
    user = make_user("fuzz")
    aik = give_identity(user)
    token, key = services.api_token_create(user=user, name="phone")
    device, _ = make_device(user, aik, token=token)
    return {"device_id": str(device.pk), "key": key}


async def exchange(user: dict[str, Any], batch: list[str | bytes]) -> list[dict[str, Any]]:
    """Send ``batch`` on a new socket, then a ping; every event before the pong."""
    comm = WebsocketCommunicator(
        application,
        f"/ws/?device={user['device_id']}",
        headers=[(b"authorization", f"Bearer {user['key']}".encode())],
    )
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from(timeout=10))["type"] == "hello"
    for raw in batch:
        if isinstance(raw, bytes):
            await comm.send_to(bytes_data=raw)
        else:
            await comm.send_to(text_data=raw)
    await comm.send_json_to({"type": "ping", "id": "last"})
    events = []
    while (event := json.loads(await comm.receive_from(timeout=10))) != {
        "type": "pong",
        "ref": "last",
    }:
        events.append(event)
    await comm.disconnect()
    return events


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=st.lists(frames, min_size=1, max_size=6))
def test_any_frame_gets_a_documented_answer_and_the_socket_stays_open(
    socket_user: dict[str, Any], batch: list[str | bytes]
) -> None:
    events = async_to_sync(exchange)(socket_user, batch)
    for event in events:
        assert isinstance(event.get("type"), str), event
        assert event["type"] != "closing", event
        if event["type"] == "error":
            error = event["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str), event
            assert error["code"] != "server_error", (event, batch)
    # Nothing a stranger's frames could reach was written: the user has no messages.
    assert async_to_sync(database_sync_to_async(message_count))() == 0


def message_count() -> int:
    from messaging.models import Message

    return Message.objects.count()
