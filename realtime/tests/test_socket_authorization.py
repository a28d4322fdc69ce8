"""The authorization matrix of the socket: every frame type a handler is registered for,
sent by each kind of caller (docs/realtime.md, docs/messages.md, docs/calls.md).

The actors and Alice's data are those of tests/test_authorization_matrix.py: Alice
(``owner``: a member of the group, a party of the call), Eve (``other``), Mallory
(``blocked``: Alice blocks her), Kim (``moderator``) and ``anonymous``. A frame someone
may not send gets an ``error`` event with the handler's code, changes nothing in the
database, and the socket stays open (a ping after it is answered). An anonymous socket
is refused when it connects.
"""

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator

from calls.models import Call
from calls.tests.support import boxed, make_call, offers_for
from common.testing import SERVICES_MODE, wait_for_worker_idle
from config.asgi import application
from messaging.tests.support import Phone, connect
from realtime.registry import handler_for, registered_types
from tests.test_authorization_matrix import (
    ACTORS,
    OFFER,
    SIGNED_IN,
    World,
    changed_tables,
    message_body,
    noted_as_used,
    snapshot,
)

pytestmark = pytest.mark.django_db(transaction=True)

FrameFor = Callable[[World, str], dict[str, Any]]
# What the frame's sender gets back: the reply's type, None (no reply: a frame that
# only relays), or ("error", code) for a refusal.
Expect = str | None | tuple[str, str]


def refused(code: str) -> tuple[str, str]:
    return ("error", code)


CONVERSATION = refused("conversation_not_found")
CALL = refused("call_not_found")


@dataclass(frozen=True)
class FrameRow:
    """One frame type: the frame an actor sends, and what (owner, other, blocked,
    moderator) get."""

    frame: FrameFor
    expect: tuple[Expect, Expect, Expect, Expect]

    def expected(self, actor: str) -> Expect:
        return self.expect[SIGNED_IN.index(actor)]


def in_group(w: World, actor: str) -> dict[str, Any]:
    w.message  # noqa: B018  (seq 1 exists, to acknowledge and read)
    return {"conversation_id": w.group_id, "seq": 1}


def ringing_for_alice(w: World) -> Call:
    return make_call(w.carol, w.alice, Call.State.RINGING,
                     offers={str(w.alice.phones[0].device.pk): OFFER})  # fmt: skip


def alice_calling(state: str) -> Callable[[World], Call]:
    def call(w: World) -> Call:
        return make_call(w.alice, w.carol, state, offers={str(w.carol.phones[0].device.pk): OFFER})

    return call


def about(call: Callable[[World], Call], **extra: Any) -> FrameFor:
    return lambda w, a: {"call_id": str(call(w).pk), **extra}


def callee(w: World, actor: str) -> dict[str, Any]:
    """Alice calls her friend Carol; everyone else calls Alice, who takes calls only from
    people she follows (and never from someone she blocks)."""
    return {"callee": w.target(actor).user.handle, "media": "audio"}


def invite(w: World, actor: str) -> dict[str, Any]:
    return {**callee(w, actor), "call_id": str(uuid.uuid4()), "offers": offers_for(w.target(actor))}


def not_allowed(reason: str) -> tuple[Expect, Expect, Expect, Expect]:
    """Calling Alice: refused by her call policy; whom she blocks does not find her."""
    return (None, refused(reason), refused("user_not_found"), refused(reason))


FRAMES: dict[str, FrameRow] = {
    "ping": FrameRow(lambda w, a: {}, ("pong", "pong", "pong", "pong")),
    "message.send": FrameRow(
        lambda w, a: {"conversation_id": w.group_id, "envelope": message_body(w, a)},
        ("message.sent", CONVERSATION, CONVERSATION, CONVERSATION),
    ),
    "message.ack": FrameRow(in_group, ("message.acked", CONVERSATION, CONVERSATION, CONVERSATION)),
    "message.read": FrameRow(
        in_group, ("message.read_marked", CONVERSATION, CONVERSATION, CONVERSATION)
    ),
    "typing": FrameRow(
        lambda w, a: {"conversation_id": w.group_id},
        (None, CONVERSATION, CONVERSATION, CONVERSATION),
    ),
    "call.prepare": FrameRow(callee, ("call.prepared", *not_allowed("policy_following")[1:])),
    "call.invite": FrameRow(invite, ("call.ringing", *not_allowed("policy_following")[1:])),
    "call.accept": FrameRow(
        about(ringing_for_alice, answer=boxed()), ("call.accepted", CALL, CALL, CALL)
    ),
    "call.decline": FrameRow(about(ringing_for_alice), ("call.ended", CALL, CALL, CALL)),
    "call.busy": FrameRow(about(ringing_for_alice), ("call.ended", CALL, CALL, CALL)),
    "call.cancel": FrameRow(
        about(alice_calling(Call.State.RINGING)), ("call.ended", CALL, CALL, CALL)
    ),
    "call.candidate": FrameRow(
        about(alice_calling(Call.State.ACTIVE), candidate=boxed(100)), (None, CALL, CALL, CALL)
    ),
    "call.hangup": FrameRow(
        about(alice_calling(Call.State.ACTIVE)), ("call.ended", CALL, CALL, CALL)
    ),
}


def handled_types() -> list[str]:
    """Every frame type the server accepts (handlers registered by the apps; tests may
    register their own, which are not the server's)."""
    return [
        kind
        for kind in registered_types()
        if ".tests." not in getattr(handler_for(kind), "__module__", "")
    ]


def test_every_frame_type_has_a_row_and_every_row_a_handler() -> None:
    types = set(handled_types())
    assert "message.send" in types and "call.invite" in types
    assert sorted(types - set(FRAMES)) == [], "frame types without a row in FRAMES"
    assert sorted(set(FRAMES) - types) == [], "rows for frame types nobody handles"


async def receive_until_pong(comm: WebsocketCommunicator, ref: str) -> list[dict[str, Any]]:
    """Everything the socket got up to the pong for ``ref`` (a socket answers its frames
    in order, so the reply to an earlier frame comes before it)."""
    events: list[dict[str, Any]] = []
    while True:
        event = await comm.receive_json_from(timeout=5)
        if event == {"type": "pong", "ref": ref}:
            return events
        events.append(event)


# Refusals first: they change nothing, so one world serves all five callers of a frame
# type, the owner last (a flush per case made the services suite minutes longer).
ACTORS_IN_ORDER = sorted(ACTORS, key=lambda actor: actor == "owner")


@pytest.mark.parametrize("kind", list(FRAMES))
async def test_frame(kind: str) -> None:
    row, world = FRAMES[kind], World()

    @sync_to_async
    def prepare() -> dict[str, tuple[Phone | None, dict[str, Any]]]:
        """Every caller's phone and frame, made before any is sent."""
        return {
            actor: (
                None if actor == "anonymous" else world.person(actor).phones[0],
                {
                    "type": kind,
                    "id": "f",
                    **row.frame(world, "owner" if actor == "anonymous" else actor),
                },
            )
            for actor in ACTORS_IN_ORDER
        }

    prepared = await prepare()
    if SERVICES_MODE:  # what the setup started (notifications of follows) is done first
        await sync_to_async(wait_for_worker_idle)()
    alices_phone = world.alice.phones[0]
    for actor, (phone, frame) in prepared.items():
        try:
            await _send_as(actor, row, alices_phone, phone, frame)
        except AssertionError as exc:
            raise AssertionError(f"{kind} as {actor}: {exc}") from exc


async def _send_as(
    actor: str, row: FrameRow, alices_phone: Phone, phone: Phone | None, frame: dict[str, Any]
) -> None:
    if phone is None:
        # No token, no session: refused at connect, before any frame.
        before = await sync_to_async(snapshot)()
        comm = WebsocketCommunicator(
            application, f"/ws/?device={alices_phone.device.pk}",
            headers=[(b"host", b"testserver"), (b"origin", b"http://testserver")],
        )  # fmt: skip
        connected, _ = await comm.connect()
        assert connected
        closing = await comm.receive_json_from()
        assert (closing["type"], closing["code"], closing["reason"]) == (
            "closing", 4001, "unauthenticated",
        )  # fmt: skip
        assert await comm.receive_output() == {"type": "websocket.close", "code": 4001}
        assert await sync_to_async(changed_tables)(before) == []
        return

    comm = await connect(phone)
    try:
        await comm.send_json_to({"type": "ping", "id": "warm"})  # the device is noted as seen
        assert await receive_until_pong(comm, "warm") == []
        await sync_to_async(noted_as_used)()
        before = await sync_to_async(snapshot)()

        await comm.send_json_to(frame)
        await comm.send_json_to({"type": "ping", "id": "after"})
        events = await receive_until_pong(comm, "after")  # the socket is still open

        replies = [event for event in events if event.get("ref") == "f"]
        expect = row.expected(actor)
        if expect is None:
            assert replies == [], replies
        elif isinstance(expect, str):
            assert [reply["type"] for reply in replies] == [expect], replies
        else:
            assert len(replies) == 1, events
            assert (replies[0]["type"], replies[0]["error"]["code"]) == expect, replies
            assert await sync_to_async(changed_tables)(before) == []
            # Events published after a commit may come after the pong: wait for them.
            events += await receive_for(comm, seconds=0.2)
            # Nothing of the call or the conversation comes back, beyond what the frame
            # said.
            assert str(alices_phone.user.email) not in str(events)
    finally:
        await comm.disconnect()


async def receive_for(comm: WebsocketCommunicator, seconds: float) -> list[dict[str, Any]]:
    """Whatever else the socket gets within ``seconds`` (from its queue: a timed-out
    receive would stop the application)."""
    await asyncio.sleep(seconds)
    events: list[dict[str, Any]] = []
    while not comm.output_queue.empty():
        message = comm.output_queue.get_nowait()
        if message.get("text"):
            events.append(json.loads(message["text"]))
    return events
