"""Messaging over the socket: who receives what, and nothing more (in-process)."""

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async

from accounts import services as account_services
from accounts.models import User
from messaging.models import Message
from messaging.tests.support import Person, connect, envelope, person

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def setup() -> dict[str, Any]:
    alice, bob, eve = person("alice", phones=2), person("bob"), person("eve")
    account_services.user_follow(follower=bob.user, followee=alice.user)
    from messaging.services import conversation_get_or_create_direct

    conversation, _ = conversation_get_or_create_direct(user=alice.user, other=bob.user)
    return {"alice": alice, "bob": bob, "eve": eve, "conversation_id": str(conversation.pk)}


async def test_send_over_the_socket_delivers_each_device_only_its_wrap() -> None:
    world = await setup()
    alice: Person = world["alice"]
    bob: Person = world["bob"]
    conversation_id = world["conversation_id"]
    sockets = {
        "alice0": await connect(alice.phones[0]),
        "alice1": await connect(alice.phones[1]),
        "bob": await connect(bob.phones[0]),
        "eve": await connect(world["eve"].phones[0]),
    }
    body, _ = await sync_to_async(envelope)(
        sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
    )
    await sockets["alice0"].send_json_to(
        {"type": "message.send", "id": "s1", "conversation_id": conversation_id, "envelope": body}
    )
    sent = await sockets["alice0"].receive_json_from()
    assert sent["type"] == "message.sent"
    assert sent["ref"] == "s1" and sent["seq"] == 1 and sent["created"] is True
    assert await sockets["alice0"].receive_nothing(timeout=0.2), "no echo to the sending device"
    received = {name: [await sockets[name].receive_json_from()] for name in ("alice1", "bob")}
    for name, phone in (("alice1", alice.phones[1]), ("bob", bob.phones[0])):
        event = received[name][0]
        assert event["type"] == "message.new"
        assert event["key"] == body["keys"][str(phone.device.pk)]
        assert "_per_device" not in event and "keys" not in event
    assert await sockets["eve"].receive_nothing(timeout=0.3), "outsiders hear nothing"
    for comm in sockets.values():
        await comm.disconnect()


async def test_socket_send_refusals_are_error_events() -> None:
    world = await setup()
    alice: Person = world["alice"]
    bob: Person = world["bob"]
    comm = await connect(alice.phones[0])
    body, _ = await sync_to_async(envelope)(
        sender=alice.phones[0], conversation_id=world["conversation_id"], recipients=[alice, bob],
        skip_device=bob.phones[0].device.pk,
    )  # fmt: skip
    frame = {"type": "message.send", "id": 9, "conversation_id": world["conversation_id"]}
    await comm.send_json_to({**frame, "envelope": body})
    conflict = await comm.receive_json_from()
    assert conflict["type"] == "error" and conflict["ref"] == 9
    assert conflict["error"]["code"] == "recipients_changed"
    assert conflict["error"]["missing"] == [str(bob.phones[0].device.pk)]
    await comm.send_json_to({**frame, "envelope": {**body, "nonce": "short"}})
    bad = await comm.receive_json_from()
    assert bad["error"]["field"] == "envelope.nonce"
    await comm.send_json_to({**frame, "conversation_id": "nope", "envelope": body})
    assert (await comm.receive_json_from())["error"]["field"] == "conversation_id"
    assert await sync_to_async(Message.objects.count)() == 0
    await comm.disconnect()


async def test_ack_and_read_receipts_reach_the_sender() -> None:
    world = await setup()
    alice: Person = world["alice"]
    bob: Person = world["bob"]
    conversation_id = world["conversation_id"]
    body, _ = await sync_to_async(envelope)(
        sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
    )
    await sync_to_async(alice.phones[0].api.post)(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    alice_socket = await connect(alice.phones[0])
    bob_socket = await connect(bob.phones[0])
    await bob_socket.send_json_to(
        {"type": "message.ack", "conversation_id": conversation_id, "seq": 1}
    )
    assert (await bob_socket.receive_json_from())["type"] == "message.acked"
    delivered = await alice_socket.receive_json_from()
    assert delivered == {
        "type": "receipt.delivered", "conversation_id": conversation_id,
        "user_id": str(bob.user.pk), "device_id": str(bob.phones[0].device.pk), "seq": 1,
    }  # fmt: skip
    await bob_socket.send_json_to(
        {"type": "message.read", "conversation_id": conversation_id, "seq": 1}
    )
    events = [await bob_socket.receive_json_from() for _ in range(2)]
    assert {event["type"] for event in events} == {"message.read_marked", "receipt.read"}
    read = await alice_socket.receive_json_from()
    assert read["type"] == "receipt.read" and read["seq"] == 1
    await alice_socket.disconnect()
    await bob_socket.disconnect()


async def test_read_receipts_off_tells_only_the_readers_own_devices() -> None:
    world = await setup()
    alice: Person = world["alice"]
    bob: Person = world["bob"]
    conversation_id = world["conversation_id"]
    body, _ = await sync_to_async(envelope)(
        sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
    )
    await sync_to_async(alice.phones[0].api.post)(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    alice_socket = await connect(alice.phones[0])
    bob_socket = await connect(bob.phones[0])
    # Turned off while Bob's socket is open: the socket's copy of Bob is older.
    await sync_to_async(User.objects.filter(pk=bob.user.pk).update)(send_read_receipts=False)
    await bob_socket.send_json_to(
        {"type": "message.read", "conversation_id": conversation_id, "seq": 1}
    )
    types = {(await bob_socket.receive_json_from())["type"] for _ in range(2)}
    assert types == {"message.read_marked", "receipt.read"}
    assert await alice_socket.receive_nothing(timeout=0.3)
    await alice_socket.disconnect()
    await bob_socket.disconnect()


async def test_typing_is_relayed_rate_limited_and_never_stored() -> None:
    world = await setup()
    alice: Person = world["alice"]
    bob: Person = world["bob"]
    eve_socket = await connect(world["eve"].phones[0])
    alice_socket = await connect(alice.phones[0])
    bob_socket = await connect(bob.phones[0])
    frame = {"type": "typing", "conversation_id": world["conversation_id"]}
    await alice_socket.send_json_to(frame)
    assert await bob_socket.receive_json_from() == {
        "type": "typing",
        "conversation_id": world["conversation_id"],
        "user_id": str(alice.user.pk),
    }
    await alice_socket.send_json_to(frame)
    assert (await alice_socket.receive_json_from())["error"]["code"] == "rate_limited"
    assert await bob_socket.receive_nothing(timeout=0.2)
    assert await eve_socket.receive_nothing(timeout=0.1)
    await eve_socket.send_json_to(frame)
    assert (await eve_socket.receive_json_from())["error"]["code"] == "conversation_not_found"
    for comm in (alice_socket, bob_socket, eve_socket):
        await comm.disconnect()


async def test_outsider_cannot_read_or_ack() -> None:
    world = await setup()
    eve_socket = await connect(world["eve"].phones[0])
    for frame_type in ("message.ack", "message.read"):
        await eve_socket.send_json_to(
            {"type": frame_type, "conversation_id": world["conversation_id"], "seq": 1}
        )
        assert (await eve_socket.receive_json_from())["error"]["code"] == "conversation_not_found"
    await eve_socket.send_json_to(
        {"type": "message.ack", "conversation_id": str(uuid.uuid4()), "seq": "x"}
    )
    assert (await eve_socket.receive_json_from())["error"]["field"] == "seq"
    await eve_socket.disconnect()
