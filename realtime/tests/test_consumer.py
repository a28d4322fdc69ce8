"""The socket in-process (Channels' WebsocketCommunicator): auth, refusals, frames, routing.

The live-server tests in test_live_socket.py cover the same paths through Daphne.
"""

from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone

from accounts import services
from accounts.tests.factories import give_identity, make_device, make_user
from common.errors import ApplicationError
from config.asgi import application
from realtime.publish import publish_now
from realtime.registry import register

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def user_with_device(handle: str | None = None) -> dict[str, Any]:
    user = make_user(handle)
    aik = give_identity(user)
    token, key = services.api_token_create(user=user, name="phone")
    device, _ = make_device(user, aik, token=token)
    return {"user": user, "aik": aik, "device": device, "token": token, "key": key}


def communicator(path: str, headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers)


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


async def expect_refusal(comm: WebsocketCommunicator, code: int, reason: str) -> None:
    connected, _ = await comm.connect()
    assert connected
    closing = await comm.receive_json_from()
    assert closing["type"] == "closing"
    assert (closing["code"], closing["reason"]) == (code, reason)
    output = await comm.receive_output()
    assert output == {"type": "websocket.close", "code": code}
    await comm.disconnect()


async def connect_ok(comm: WebsocketCommunicator) -> dict[str, Any]:
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from()
    assert hello["type"] == "hello", hello
    return hello


async def test_token_socket_says_hello_and_answers_ping() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    hello = await connect_ok(comm)
    assert hello == {
        "type": "hello",
        "user_id": str(alice["user"].pk),
        "device_id": str(alice["device"].pk),
        "notifications_unread": 0,
        "account_warnings": [],
    }
    await comm.send_json_to({"type": "ping", "id": 7})
    assert await comm.receive_json_from() == {"type": "pong", "ref": 7}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("bad_token", 4001, "unauthenticated"),
        ("malformed_header", 4001, "unauthenticated"),
        ("no_device", 4000, "device_required"),
        ("bad_device_id", 4000, "device_required"),
        ("unknown_device", 4004, "device_unknown"),
        ("other_users_device", 4004, "device_mismatch"),
        ("revoked_device", 4005, "device_revoked"),
        ("suspended", 4007, "account_suspended"),
        ("cookie_without_origin", 4003, "unauthenticated"),
    ],
)
async def test_refusals_have_clear_close_codes(case: str, code: int, reason: str) -> None:
    alice = await user_with_device()
    bob = await user_with_device()
    path, headers = f"/ws/?device={alice['device'].pk}", bearer(alice["key"])
    if case == "bad_token":
        headers = bearer("parley_wrong")
    elif case == "malformed_header":
        headers = [(b"authorization", b"Token abc")]
    elif case == "no_device":
        path = "/ws/"
    elif case == "bad_device_id":
        path = "/ws/?device=123"
    elif case == "unknown_device":
        # A token not bound to a device may name any device, but this one does not exist.
        _, key = await sync_to_async(services.api_token_create)(user=alice["user"])
        path, headers = "/ws/?device=00000000-0000-4000-8000-000000000000", bearer(key)
    elif case == "other_users_device":
        path = f"/ws/?device={bob['device'].pk}"
    elif case == "revoked_device":
        await sync_to_async(services.device_revoke)(
            user=alice["user"], device_id=alice["device"].pk
        )
        _, key = await sync_to_async(services.api_token_create)(user=alice["user"])
        headers = bearer(key)
    elif case == "suspended":
        await sync_to_async(alice["user"].__class__.objects.filter(pk=alice["user"].pk).update)(
            suspended_until=timezone.now() + timedelta(days=1)
        )
    elif case == "cookie_without_origin":
        headers = [(b"cookie", b"sessionid=whatever")]
    await expect_refusal(communicator(path, headers), code, reason)


@sync_to_async
def session_cookie_for(user: Any) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "accounts.backends.HandleOrEmailBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"sessionid={session.session_key}"


async def test_session_cookie_works_only_from_our_own_origin() -> None:
    alice = await user_with_device()
    cookie = await session_cookie_for(alice["user"])
    path = f"/ws/?device={alice['device'].pk}"
    good = [
        (b"cookie", cookie.encode()),
        (b"host", b"testserver"),
        (b"origin", b"http://testserver"),
    ]
    comm = communicator(path, good)
    await connect_ok(comm)
    await comm.disconnect()
    evil = [
        (b"cookie", cookie.encode()),
        (b"host", b"testserver"),
        (b"origin", b"https://evil.example"),
    ]
    await expect_refusal(communicator(path, evil), 4003, "unauthenticated")


async def test_signing_out_of_the_site_closes_the_sessions_sockets() -> None:
    alice = await user_with_device()
    cookie = await session_cookie_for(alice["user"])
    headers = [
        (b"cookie", cookie.encode()),
        (b"host", b"testserver"),
        (b"origin", b"http://testserver"),
    ]
    comm = communicator(f"/ws/?device={alice['device'].pk}", headers)
    await connect_ok(comm)

    @sync_to_async
    def sign_out() -> None:
        from django.db import transaction

        with transaction.atomic():
            services.session_end_sockets(session_key=cookie.split("=", 1)[1])

    await sign_out()
    closing = await comm.receive_json_from()
    assert (closing["code"], closing["reason"]) == (4006, "logged_out")
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4006}


async def test_malformed_frames_get_error_events_and_the_socket_stays_open() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    await connect_ok(comm)
    cases = [
        ("{not json", "invalid_json"),
        ("[1, 2]", "invalid_frame"),
        ('{"no": "type"}', "invalid_frame"),
        ('{"type": 5}', "invalid_frame"),
        ('{"type": "no.such.thing", "id": "a1"}', "unknown_type"),
        ("x" * (256 * 1024 + 1), "frame_too_large"),
    ]
    for text, code in cases:
        await comm.send_to(text_data=text)
        event = await comm.receive_json_from()
        assert event["type"] == "error", text[:20]
        assert event["error"]["code"] == code, text[:20]
    await comm.send_to(bytes_data=b"\x00\x01")
    assert (await comm.receive_json_from())["error"]["code"] == "invalid_frame"
    await comm.send_json_to({"type": "ping"})
    assert await comm.receive_json_from() == {"type": "pong"}
    await comm.disconnect()


@register("test.echo_or_refuse")
def _echo_or_refuse(ctx: Any, frame: dict[str, Any]) -> dict[str, Any]:
    if frame.get("refuse"):
        raise ApplicationError("nope", "Refused for the test.", field="refuse")
    if frame.get("crash"):
        raise RuntimeError("a bug")
    return {"type": "test.echo", "user": ctx.user.handle, "device": str(ctx.device_id)}


async def test_app_handlers_reply_refuse_and_fail_safely() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    await connect_ok(comm)
    await comm.send_json_to({"type": "test.echo_or_refuse", "id": "r1"})
    echo = await comm.receive_json_from()
    assert echo == {
        "type": "test.echo", "user": alice["user"].handle,
        "device": str(alice["device"].pk), "ref": "r1",
    }  # fmt: skip
    await comm.send_json_to({"type": "test.echo_or_refuse", "id": "r2", "refuse": True})
    assert await comm.receive_json_from() == {
        "type": "error", "ref": "r2",
        "error": {"code": "nope", "message": "Refused for the test.", "field": "refuse"},
    }  # fmt: skip
    await comm.send_json_to({"type": "test.echo_or_refuse", "id": "r3", "crash": True})
    crashed = await comm.receive_json_from()
    assert crashed["error"]["code"] == "server_error" and crashed["ref"] == "r3"
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


async def test_events_reach_only_their_users_and_per_device_parts_only_their_device() -> None:
    alice = await user_with_device()
    bob = await user_with_device()
    alice_laptop_token, alice_laptop_key = await sync_to_async(services.api_token_create)(
        user=alice["user"]
    )
    laptop, _ = await sync_to_async(make_device)(alice["user"], alice["aik"], alice_laptop_token)
    phone = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    laptop_socket = communicator(f"/ws/?device={laptop.pk}", bearer(alice_laptop_key))
    outsider = communicator(f"/ws/?device={bob['device'].pk}", bearer(bob["key"]))
    for comm in (phone, laptop_socket, outsider):
        await connect_ok(comm)
    event = {"type": "test.event", "_per_device": {str(alice["device"].pk): {"wrap": "for-phone"}}}
    await sync_to_async(publish_now)(user_ids=[alice["user"].pk], event=event)
    assert await phone.receive_json_from() == {"type": "test.event", "wrap": "for-phone"}
    assert await laptop_socket.receive_nothing(timeout=0.3)
    assert await outsider.receive_nothing(timeout=0.1)
    for comm in (phone, laptop_socket, outsider):
        await comm.disconnect()


async def test_revoking_a_device_closes_its_open_socket_and_tells_the_others() -> None:
    alice = await user_with_device()
    laptop_token, laptop_key = await sync_to_async(services.api_token_create)(user=alice["user"])
    laptop, _ = await sync_to_async(make_device)(alice["user"], alice["aik"], laptop_token)
    phone = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    laptop_socket = communicator(f"/ws/?device={laptop.pk}", bearer(laptop_key))
    await connect_ok(phone)
    await connect_ok(laptop_socket)
    await sync_to_async(services.device_revoke)(user=alice["user"], device_id=alice["device"].pk)
    closing = await phone.receive_json_from()
    assert closing == {
        "type": "closing", "code": 4005, "reason": "device_revoked",
        "message": "This connection was closed.",
    }  # fmt: skip
    assert await phone.receive_output() == {"type": "websocket.close", "code": 4005}
    notice = await laptop_socket.receive_json_from()
    assert notice == {"type": "device.revoked", "device_id": str(alice["device"].pk)}
    await laptop_socket.disconnect()


async def test_revoking_a_token_closes_its_socket() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    await connect_ok(comm)
    await sync_to_async(services.api_token_revoke)(user=alice["user"], token_id=alice["token"].pk)
    closing = await comm.receive_json_from()
    assert (closing["type"], closing["code"]) == ("closing", 4006)
    assert await comm.receive_output() == {"type": "websocket.close", "code": 4006}


async def test_contacts_hear_of_an_identity_key_change() -> None:
    alice = await user_with_device()
    friend = await user_with_device()
    stranger = await user_with_device()
    await sync_to_async(services.user_follow)(follower=friend["user"], followee=alice["user"])
    friend_socket = communicator(f"/ws/?device={friend['device'].pk}", bearer(friend["key"]))
    stranger_socket = communicator(f"/ws/?device={stranger['device'].pk}", bearer(stranger["key"]))
    await connect_ok(friend_socket)
    await connect_ok(stranger_socket)
    from nacl.signing import SigningKey

    from accounts.tests.factories import PASSWORD

    await sync_to_async(services.identity_key_set)(
        user=alice["user"],
        public_key=bytes(SigningKey.generate().verify_key),
        password=PASSWORD,
    )
    event = await friend_socket.receive_json_from()
    assert event == {
        "type": "keys.changed", "user_id": str(alice["user"].pk), "identity_key_changed": True,
    }  # fmt: skip
    assert await stranger_socket.receive_nothing(timeout=0.3)
    await friend_socket.disconnect()
    await stranger_socket.disconnect()


async def test_hostile_frames_do_not_kill_the_socket() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    await connect_ok(comm)
    await comm.send_to(text_data="[" * 200_000)
    assert (await comm.receive_json_from())["error"]["code"] == "invalid_json"
    await comm.send_json_to({"type": "ping"})
    assert (await comm.receive_json_from())["type"] == "pong"
    await comm.disconnect()


async def test_every_kind_of_frame_counts_toward_the_rate_limit() -> None:
    alice = await user_with_device()
    comm = communicator(f"/ws/?device={alice['device'].pk}", bearer(alice["key"]))
    await connect_ok(comm)
    codes = []
    for _ in range(80):
        await comm.send_to(bytes_data=b"\x00")
        codes.append((await comm.receive_json_from())["error"]["code"])
    assert "rate_limited" in codes
    assert codes[0] == "invalid_frame"
    await comm.disconnect()
