"""End to end over a live Daphne server, with the Python reference client acting as real
users: real HTTP, real sockets, real cryptography on the client side only."""

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from parley_client import crypto
from parley_client.client import ApiError, ParleyClient

from common.testing import LiveServer, database_dump
from messaging.models import Message

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"


def new_user(server: LiveServer, handle: str) -> tuple[ParleyClient, str]:
    """A user with their first device set up; returns the client and recovery code."""
    client = ParleyClient(server.url)
    client.sign_up(handle, f"{handle}@example.com", PASSWORD, token_name="phone")
    return client, client.set_up_keys("phone")


def another_device(server: LiveServer, handle: str, recovery_code: str, name: str) -> ParleyClient:
    """A new device (a new machine): sign in, restore the backup, certify itself."""
    client = ParleyClient(server.url)
    client.log_in(handle, PASSWORD, token_name=name)
    client.restore(recovery_code=recovery_code, device_name=name)
    return client


async def test_two_users_two_devices_each_in_real_time_then_sync_and_restore(
    daphne_server: LiveServer,
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    alice, alice_code = new_user(daphne_server, "alice")
    bob, bob_code = new_user(daphne_server, "bob")
    alice_laptop = another_device(daphne_server, "alice", alice_code, "laptop")
    bob_laptop = another_device(daphne_server, "bob", bob_code, "laptop")
    # Bob's tablet is certified now but stays offline while the others talk.
    bob_tablet = another_device(daphne_server, "bob", bob_code, "tablet")

    conversation_id = alice.open_direct("bob")
    bob.accept(conversation_id)
    sockets = {
        name: await client.connect()
        for name, client in {
            "alice": alice, "alice_laptop": alice_laptop, "bob": bob, "bob_laptop": bob_laptop,
        }.items()
    }  # fmt: skip

    sent = alice.send_text(conversation_id, f"hello bob {marker}")
    assert sent["seq"] == 1
    for name in ("bob", "bob_laptop", "alice_laptop"):
        received = await sockets[name].next_message()
        assert received.verified, (name, received.error)
        assert received.text == f"hello bob {marker}"
        assert received.message["sender_id"] == alice.user_id

    bob_laptop.send_text(conversation_id, f"hi alice, from my laptop {marker}")
    for name in ("alice", "alice_laptop", "bob"):
        received = await sockets[name].next_message()
        assert received.verified and received.text == f"hi alice, from my laptop {marker}"
    for socket in sockets.values():
        await socket.close()

    # The tablet was offline: it catches up by sync, and a second sync brings nothing.
    caught_up = bob_tablet.sync()
    assert [r.text for r in caught_up] == [
        f"hello bob {marker}", f"hi alice, from my laptop {marker}",
    ]  # fmt: skip
    assert all(r.verified for r in caught_up)
    assert bob_tablet.sync() == []

    # A device restored from the backup on a new machine reads the earlier history
    # through the history key.
    restored = another_device(daphne_server, "alice", alice_code, "new machine")
    history = restored.history(conversation_id)
    assert sorted(r.text or "" for r in history) == sorted(
        [f"hello bob {marker}", f"hi alice, from my laptop {marker}"]
    )
    assert all(r.verified for r in history)

    # The marker is nowhere on the server side: not in any table, not in the logs.
    dump = await sync_to_async(database_dump)()
    assert dump, "the dump read something"
    assert not [value for value in dump if marker.encode() in value]
    assert marker not in daphne_server.log()
    assert await sync_to_async(Message.objects.count)() == 2


def test_wrong_device_set_then_success_and_tampering_shows_unverified(
    daphne_server: LiveServer,
) -> None:
    alice, _ = new_user(daphne_server, "alice2")
    bob, bob_code = new_user(daphne_server, "bob2")
    conversation_id = alice.open_direct("bob2")
    bob.accept(conversation_id)
    alice.send_text(conversation_id, "first")  # Alice's client caches Bob's devices
    # Bob adds a device: Alice's next send is refused with 409, then re-encrypted.
    another_device(daphne_server, "bob2", bob_code, "laptop")
    body = crypto.encrypt_message(
        {"type": "text", "body": "stale"}, conversation_id, alice.device_id, None,
        alice.device.box_secret, alice._directories[bob.user_id].devices
        | alice._directories[alice.user_id].devices,
    )  # fmt: skip
    with pytest.raises(ApiError) as refused:
        alice.request("POST", f"/conversations/{conversation_id}/messages", json=body)
    assert refused.value.status == 409 and len(refused.value.error["missing"]) == 1
    assert alice.send_text(conversation_id, "second")["seq"] == 2  # refreshes and succeeds

    # A server that alters stored bytes cannot make a client show altered content.
    second = Message.objects.get(seq=2)
    ciphertext = bytearray(bytes(second.ciphertext))
    ciphertext[-1] ^= 1
    Message.objects.filter(pk=second.pk).update(ciphertext=bytes(ciphertext))
    first = Message.objects.get(seq=1)
    Message.objects.filter(pk=first.pk).update(franking_tag=bytes(32))
    messages = {r.message["seq"]: r for r in bob.history(conversation_id)}
    assert messages[1].verified is False and messages[1].payload is None
    assert messages[2].verified is False and messages[2].payload is None


def test_the_inbox_is_read_to_the_end_past_the_first_page(daphne_server: LiveServer) -> None:
    """The API gives at most 100 conversations a page: the client reads them all, each
    once, and keeps requests apart."""
    from accounts.models import User
    from messaging.services import conversation_get_or_create_direct
    from messaging.tests.support import person

    alice, _ = new_user(daphne_server, "alice3")
    me = User.objects.get(handle="alice3")
    pals = [person(f"pal{number}", phones=0, history_key=False).user for number in range(105)]
    for pal in pals:
        conversation_get_or_create_direct(user=me, other=pal)
    # One pal starts a conversation with Alice, who does not follow them: a request.
    asking = person("asking", phones=0, history_key=False).user
    conversation_get_or_create_direct(user=asking, other=me)

    inbox = alice.inbox()
    assert len(inbox) == 105
    assert len({conversation["id"] for conversation in inbox}) == 105
    members = {member["user"]["handle"] for entry in inbox for member in entry["members"]}
    assert members == {"alice3", *(pal.handle for pal in pals)}
    (request,) = alice.inbox(requests=True)
    assert {member["user"]["handle"] for member in request["members"]} == {"alice3", "asking"}


def test_report_with_franking_proof_and_a_forged_one(daphne_server: LiveServer) -> None:
    alice, _ = new_user(daphne_server, "alice3")
    bob, _ = new_user(daphne_server, "bob3")
    conversation_id = alice.open_direct("bob3")
    bob.accept(conversation_id)
    alice.send_text(conversation_id, "something abusive")
    (received,) = bob.history(conversation_id)
    assert received.verified
    report = bob.report(received, "harassment", "please look")
    assert report["verified"] is True
    from messaging.models import Report

    stored = Report.objects.get()
    assert "something abusive" in stored.content
    assert stored.reported_user_id == uuid.UUID(alice.user_id)

    # A forged payload (Bob claims Alice wrote something else) is refused.
    forged = crypto.serialize_payload({"type": "text", "body": "something she never said"})
    with pytest.raises(ApiError) as refused:
        bob.request(
            "POST", "/reports",
            json={"message_id": received.id, "payload": crypto.b64u_encode(forged),
                  "franking_key": crypto.b64u_encode(received.franking_key or b""),
                  "reason": "harassment"},
        )  # fmt: skip
    assert refused.value.status == 400 and refused.value.code == "invalid_franking_proof"
    assert Report.objects.count() == 1


def test_encrypted_attachment_round_trip(daphne_server: LiveServer) -> None:
    alice, _ = new_user(daphne_server, "alice4")
    bob, _ = new_user(daphne_server, "bob4")
    conversation_id = alice.open_direct("bob4")
    bob.accept(conversation_id)
    secret_bytes = b"PHOTO-MARKER " * 100_000  # 1.3 MB: chunked with secretstream
    meta = alice.upload_attachment(conversation_id, secret_bytes, mime="image/png", name="me.png")
    alice.send_text(conversation_id, "a photo", attachments=[meta])
    (received,) = bob.history(conversation_id)
    assert received.verified and received.payload is not None
    (attachment,) = received.payload["attachments"]
    assert bob.download_attachment(attachment) == secret_bytes
    assert not [value for value in database_dump() if b"me.png" in value or b"image/png" in value]
    stranger, _ = new_user(daphne_server, "eve4")
    with pytest.raises(ApiError) as refused:
        stranger.request("GET", f"/attachments/{attachment['blob_id']}")
    assert refused.value.status == 404


def test_identity_key_change_is_flagged_and_blocks_sending_to_a_verified_user(
    daphne_server: LiveServer,
) -> None:
    from parley_client.client import IdentityKeyChanged

    alice, _ = new_user(daphne_server, "alice5")
    bob, _ = new_user(daphne_server, "bob5")
    conversation_id = alice.open_direct("bob5")
    bob.accept(conversation_id)
    assert alice.safety_number("bob5") == bob.safety_number("alice5")
    alice.mark_verified("bob5")
    # Bob loses everything and resets his identity key.
    reset = ParleyClient(daphne_server.url)
    reset.log_in("bob5", PASSWORD)
    reset.request(
        "PUT", "/keys/identity",
        json={"aik_pub": crypto.b64u_encode(crypto.IdentityKey.generate().public),
              "password": PASSWORD},
    )  # fmt: skip
    with pytest.raises(IdentityKeyChanged):
        alice.send_text(conversation_id, "are you still you?")
    pin: Any = alice.pin(bob.user_id)
    assert pin.verified is True, "nothing changed until Alice confirms"


def test_command_line_signup_send_and_sync(daphne_server: LiveServer, tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from common.testing import ROOT

    def cli(state: str, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "parley_client", "--server", daphne_server.url,
             "--state", str(tmp_path / state), *args],
            cwd=ROOT / "clients" / "python", capture_output=True, text=True, timeout=60,
            env={**os.environ, "PARLEY_PASSWORD": PASSWORD},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    cli("alice.json", "signup", "alice6", "alice6@example.com")
    assert "recovery key" in cli("alice.json", "init").lower()
    cli("bob.json", "signup", "bob6", "bob6@example.com")
    cli("bob.json", "init")
    assert "sent #1" in cli("alice.json", "send", "@bob6", "hello from the command line")
    assert "hello from the command line" in cli("bob.json", "sync")
    assert len(cli("alice.json", "safety", "@bob6").split()) == 12
