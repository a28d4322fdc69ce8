"""Call signaling over the socket (in-process): each piece reaches only the device it
is for, and bad frames get an error event on a socket that stays open."""

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import Call
from calls.tests.support import boxed, friends
from messaging.tests.support import connect, person

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(comm: WebsocketCommunicator, frame: dict[str, Any]) -> dict[str, Any]:
    await comm.send_json_to({"id": "r", **frame})
    reply: dict[str, Any] = await comm.receive_json_from(timeout=5)
    assert reply.get("ref") == "r", reply
    return reply


@database_sync_to_async
def world() -> dict[str, Any]:
    alice, bob = friends("alice", "bob", phones=2)
    return {"alice": alice, "bob": bob, "eve": person("eve", history_key=False)}


async def test_a_call_from_invite_to_hangup_over_the_socket() -> None:
    people = await world()
    alice, bob = people["alice"], people["bob"]
    a0, a1 = await connect(alice.phones[0]), await connect(alice.phones[1])
    b0, b1 = await connect(bob.phones[0]), await connect(bob.phones[1])
    eve = await connect(people["eve"].phones[0])

    prepared = await ask(a0, {"type": "call.prepare", "callee": "bob", "media": "video"})
    assert prepared["type"] == "call.prepared"
    assert prepared["callee"]["id"] == str(bob.user.pk)
    assert prepared["relay_only"] is False and prepared["ice_servers"] == []

    call_id = str(uuid.uuid4())
    offers = {str(phone.device.pk): boxed() for phone in bob.phones}
    ringing = await ask(
        a0,
        {"type": "call.invite", "call_id": call_id, "callee": "bob", "media": "video",
         "offers": offers},
    )  # fmt: skip
    assert ringing["type"] == "call.ringing" and ringing["call_id"] == call_id
    for comm, phone in ((b0, bob.phones[0]), (b1, bob.phones[1])):
        incoming = await comm.receive_json_from(timeout=5)
        assert incoming["type"] == "call.incoming" and incoming["call_id"] == call_id
        assert incoming["offer"] == offers[str(phone.device.pk)]  # its own, only
        assert "_per_device" not in incoming
        assert incoming["caller"]["handle"] == "alice" and incoming["media"] == "video"
        assert incoming["caller_device"] == str(alice.phones[0].device.pk)
        assert incoming["relay_only"] is False

    answer = boxed()
    accepted = await ask(b1, {"type": "call.accept", "call_id": call_id, "answer": answer})
    assert accepted == {"type": "call.accepted", "call_id": call_id, "ref": "r"}
    to_caller = await a0.receive_json_from(timeout=5)
    assert to_caller == {
        "type": "call.accepted", "call_id": call_id,
        "callee_device": str(bob.phones[1].device.pk), "answer": answer,
    }  # fmt: skip
    # Every socket of the callee hears who answered (two tabs can be one device).
    for comm in (b0, b1):
        elsewhere = await comm.receive_json_from(timeout=5)
        assert elsewhere == {
            "type": "call.answered_elsewhere", "call_id": call_id,
            "callee_device": str(bob.phones[1].device.pk),
        }  # fmt: skip

    late = await ask(b0, {"type": "call.accept", "call_id": call_id, "answer": boxed()})
    assert late["type"] == "error" and late["error"]["code"] == "call_answered_elsewhere"

    candidate = boxed(120)
    await a0.send_json_to({"type": "call.candidate", "call_id": call_id, "candidate": candidate})
    relayed = await b1.receive_json_from(timeout=5)
    assert relayed == {
        "type": "call.candidate", "call_id": call_id,
        "from_device": str(alice.phones[0].device.pk), "candidate": candidate,
    }  # fmt: skip
    back = boxed(120)
    await b1.send_json_to({"type": "call.candidate", "call_id": call_id, "candidate": back})
    assert (await a0.receive_json_from(timeout=5))["candidate"] == back

    ended = await ask(a0, {"type": "call.hangup", "call_id": call_id})
    assert ended["type"] == "call.ended" and ended["state"] == "ended"
    assert ended["reason"] == "hangup" and isinstance(ended["duration"], int)
    # Every socket of both users hears the end; nothing else reached anyone.
    for comm in (a0, a1, b0, b1):
        event = await comm.receive_json_from(timeout=5)
        assert event["type"] == "call.ended" and event["call_id"] == call_id
    for comm in (a0, a1, b0, b1, eve):
        assert await comm.receive_nothing(timeout=0.2)
    for comm in (a0, a1, b0, b1, eve):
        await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ({"type": "call.invite", "callee": "bob", "media": "audio", "offers": {}}, "required",
         "call_id"),
        ({"type": "call.invite", "call_id": "nope", "callee": "bob", "media": "audio",
          "offers": {"x": "y"}}, "invalid", "call_id"),
        ({"type": "call.invite", "call_id": str(uuid.uuid4()), "callee": "bob",
          "media": "hologram", "offers": {}}, "invalid_choice", "media"),
        ({"type": "call.invite", "call_id": str(uuid.uuid4()), "callee": "bob",
          "media": "audio", "offers": {"not-an-id": "AAAA"}}, "invalid", "offers.not-an-id"),
        ({"type": "call.invite", "call_id": str(uuid.uuid4()), "callee": "bob",
          "media": "audio", "offers": []}, "invalid", "offers"),
        ({"type": "call.accept", "call_id": str(uuid.uuid4()), "answer": "!!"}, "invalid",
         "answer"),
        ({"type": "call.candidate", "call_id": str(uuid.uuid4())}, "required", "candidate"),
        ({"type": "call.hangup", "call_id": str(uuid.uuid4()), "reason": "bored"},
         "invalid_choice", "reason"),
        ({"type": "call.decline", "call_id": str(uuid.uuid4())}, "call_not_found", "call_id"),
        ({"type": "call.prepare", "callee": "nobody", "media": "audio"}, "user_not_found",
         "callee"),
    ],
)  # fmt: skip
async def test_bad_frames_get_an_error_naming_the_field_and_change_nothing(
    frame: dict[str, Any], code: str, field: str
) -> None:
    people = await world()
    comm = await connect(people["alice"].phones[0])
    reply = await ask(comm, frame)
    assert reply["type"] == "error", reply
    assert (reply["error"]["code"], reply["error"]["field"]) == (code, field)
    assert await database_sync_to_async(Call.objects.count)() == 0
    # The socket is still open and answering.
    assert (await ask(comm, {"type": "ping"}))["type"] == "pong"
    await comm.disconnect()
