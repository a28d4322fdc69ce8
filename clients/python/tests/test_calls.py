"""Calls between two Python reference clients (aiortc) through a live Daphne server and,
relay-only, through coturn on loopback: real signaling, real ICE, DTLS and media.

Every wait is bounded (20 s). aioice never offers 127.0.0.1 as a host candidate, so the
tests make it the only host address; a shorter STUN retry makes TURN checks quick
(shared RECIPES.md, "Real WebRTC peers in Python: aiortc").
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import aioice.ice
import aioice.stun
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from av import AudioFrame
from channels.db import database_sync_to_async
from parley_client import crypto
from parley_client.calls import (
    IncomingCall,
    OutgoingCall,
    SignalingError,
    open_signal,
    prepare_call,
    signal_plaintext,
)
from parley_client.client import LiveSocket, ParleyClient

from common.testing import LiveServer, database_dump, wait_until

if TYPE_CHECKING:
    from conftest import TurnServer

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
WAIT = 20.0
T = TypeVar("T")


async def within(awaitable: Awaitable[T]) -> T:
    """Every wait in these tests is bounded."""
    return await asyncio.wait_for(awaitable, WAIT)


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback is the only network here: make it aioice's host address."""
    monkeypatch.setattr(
        aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    )
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)


@pytest.fixture(scope="module")
def turn_daphne(start_daphne: Callable[..., LiveServer], turn_server: TurnServer) -> LiveServer:
    """A Daphne that hands out credentials for the test coturn."""
    return start_daphne(env=turn_server.daphne_env())


@pytest.fixture(scope="module")
def wrong_turn_daphne(
    start_daphne: Callable[..., LiveServer], turn_server: TurnServer
) -> LiveServer:
    """A Daphne whose TURN secret is not coturn's: its credentials are refused."""
    return start_daphne(env=turn_server.daphne_env(secret="not-the-turn-secret"))


def new_user(server: LiveServer, prefix: str) -> ParleyClient:
    """A user with their first device set up."""
    handle = f"{prefix}_{uuid.uuid4().hex[:6]}"
    client = ParleyClient(server.url)
    client.sign_up(handle, f"{handle}@example.com", PASSWORD, token_name="phone")
    client.set_up_keys("phone")
    return client


def handle(client: ParleyClient) -> str:
    assert client.state.handle is not None
    return client.state.handle


def follow(follower: ParleyClient, followee: ParleyClient) -> None:
    follower.request("POST", f"/users/{handle(followee)}/follow")


@contextlib.asynccontextmanager
async def sockets(*clients: ParleyClient) -> AsyncIterator[list[LiveSocket]]:
    """Live sockets for the clients, closed at the end."""
    opened = [await within(client.connect()) for client in clients]
    try:
        yield opened
    finally:
        for live in opened:
            await live.close()


class Drain:
    """Reads a remote track to its end (aiortc buffers what nobody reads), keeping the
    first frame."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.first: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.frames = 0
        self._task = asyncio.ensure_future(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames += 1
                if not self.first.done():
                    self.first.set_result(frame)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def candidate_lines(sdp: str | None) -> list[str]:
    assert sdp is not None
    return [line for line in sdp.splitlines() if line.startswith("a=candidate:")]


def sha256_fingerprint(sdp: str | None) -> str:
    assert sdp is not None
    found = re.search(r"^a=fingerprint:sha-256 ([0-9A-F:]{95})\r?$", sdp, re.MULTILINE)
    assert found, "the SDP carries a sha-256 DTLS fingerprint"
    return found.group(1)


async def close_all(*calls: OutgoingCall | IncomingCall | None) -> None:
    for call in calls:
        if call is not None:
            await call.close()


async def connected_audio_call(
    caller: LiveSocket, callee: LiveSocket, callee_handle: str
) -> tuple[OutgoingCall, IncomingCall, Drain]:
    """Caller sends audio, callee answers; both connected and audio arriving."""
    call = await within(caller.place_call(callee_handle, "audio", tracks=[AudioStreamTrack()]))
    incoming = await within(callee.next_incoming_call(WAIT))
    await within(incoming.accept())
    await within(call.wait_connected())
    await within(incoming.wait_connected())
    drain = Drain(await within(incoming.next_remote_track()))
    frame = await within(drain.first)
    assert isinstance(frame, AudioFrame)
    assert frame.sample_rate == 48000 and frame.samples > 0
    return call, incoming, drain


# --- A direct call -----------------------------------------------------------------------------


async def test_a_call_between_two_reference_clients(daphne_server: LiveServer) -> None:
    from calls.models import Call

    alice, bob = new_user(daphne_server, "alice"), new_user(daphne_server, "bob")
    follow(alice, bob)
    follow(bob, alice)
    async with sockets(alice, bob) as (alice_live, bob_live):
        call = await within(
            alice_live.place_call(handle(bob), "audio", tracks=[AudioStreamTrack()])
        )
        assert call.ring_deadline and not call.ended and call.relay_only is False
        incoming = await within(bob_live.next_incoming_call(WAIT))
        drain: Drain | None = None
        try:
            assert incoming.call_id == call.call_id
            assert incoming.caller.id == alice.user_id and incoming.caller.handle == handle(alice)
            assert incoming.caller_device == alice.device_id
            assert incoming.media == "audio"
            assert incoming.relay_only is False, "Bob follows Alice: no relay forced"
            assert incoming.offer_sdp == call.local_sdp

            await within(incoming.accept())
            await within(call.wait_connected())
            await within(incoming.wait_connected())
            assert call.pc.connectionState == incoming.pc.connectionState == "connected"
            assert call.peer_device == bob.device_id
            # Each side holds the other's DTLS fingerprint as the other's box said.
            assert sha256_fingerprint(call.remote_sdp) == sha256_fingerprint(incoming.local_sdp)
            assert sha256_fingerprint(incoming.remote_sdp) == sha256_fingerprint(call.local_sdp)

            track = await within(incoming.next_remote_track())
            assert track.kind == "audio"
            drain = Drain(track)
            first = await within(drain.first)
            assert isinstance(first, AudioFrame)
            assert first.sample_rate == 48000 and first.samples == 960

            # The data channel, both ways.
            alice_channel = await within(call.wait_data_channel())
            alice_channel.send("hello from alice")
            bob_channel = await within(incoming.wait_data_channel())
            assert bob_channel.label == "parley"
            assert await within(incoming.next_data()) == "hello from alice"
            bob_channel.send("hello from bob")
            assert await within(call.next_data()) == "hello from bob"

            await asyncio.sleep(1.2)  # a call of at least a second: its duration shows
            ended = await within(call.hang_up())
            assert ended["type"] == "call.ended" and ended["call_id"] == call.call_id
            assert ended["state"] == "ended" and ended["reason"] == "hangup"
            bob_ended = await within(incoming.wait_ended())
            assert bob_ended["state"] == "ended" and bob_ended["reason"] == "hangup"
            assert bob_ended["duration"] >= 1
            assert call.pc.connectionState == incoming.pc.connectionState == "closed"
            assert drain.frames > 1
            assert call.refused_signals == incoming.refused_signals == []
        finally:
            if drain is not None:
                await drain.stop()
            await close_all(call, incoming)

    record = await asyncio.to_thread(alice.request, "GET", f"/calls/{call.call_id}")
    assert record["state"] == "ended" and record["end_reason"] == "hangup"
    assert record["direction"] == "outgoing" and record["media"] == "audio"
    assert record["duration"] >= 1
    stored = await database_sync_to_async(Call.objects.get)(pk=call.call_id)
    assert stored.state == "ended" and stored.duration is not None and stored.duration >= 1
    assert stored.offers == {} and stored.answer == "", "the boxed SDPs are erased"


# --- Relay-only through coturn -----------------------------------------------------------------


async def test_a_stranger_calls_and_the_callee_answers_through_the_relay_only(
    turn_daphne: LiveServer, turn_server: TurnServer
) -> None:
    log_before = len(turn_server.log())
    alice, bob = new_user(turn_daphne, "alice"), new_user(turn_daphne, "bob")
    # Bob takes calls from anyone but does not follow Alice: his address stays hidden.
    bob.request("PATCH", "/me", json={"call_policy": "everyone"})
    follow(alice, bob)
    async with sockets(alice, bob) as (alice_live, bob_live):
        call = await within(
            alice_live.place_call(handle(bob), "audio", tracks=[AudioStreamTrack()])
        )
        incoming = await within(bob_live.next_incoming_call(WAIT))
        drain: Drain | None = None
        try:
            assert call.relay_only is False
            assert incoming.relay_only is True, "Bob does not follow Alice"
            (server,) = incoming.ice_servers
            assert turn_server.url in server["urls"]
            assert server["username"].endswith(f":{bob.user_id}")
            assert candidate_lines(call.local_sdp), "Alice offers her candidates"

            await within(incoming.accept())
            bob_candidates = candidate_lines(incoming.local_sdp)
            assert bob_candidates, "Bob gathered a relay candidate"
            for line in bob_candidates:
                assert " typ relay " in f"{line} ", line
                port = int(line.split()[5])
                assert turn_server.min_port <= port <= turn_server.max_port, line
            assert " typ host" not in (incoming.local_sdp or "")

            await within(call.wait_connected())
            await within(incoming.wait_connected())
            drain = Drain(await within(incoming.next_remote_track()))
            assert isinstance(await within(drain.first), AudioFrame)

            await within(call.hang_up())
            assert (await within(incoming.wait_ended()))["reason"] == "hangup"
        finally:
            if drain is not None:
                await drain.stop()
            await close_all(call, incoming)

    def allocated() -> bool:
        return "ALLOCATE processed, success" in turn_server.log()[log_before:]

    await asyncio.to_thread(wait_until, allocated, WAIT, "coturn logged an allocation")


async def test_with_credentials_coturn_refuses_the_relay_only_side_gathers_nothing(
    wrong_turn_daphne: LiveServer, turn_server: TurnServer
) -> None:
    alice, bob = new_user(wrong_turn_daphne, "alice"), new_user(wrong_turn_daphne, "bob")
    bob.request("PATCH", "/me", json={"call_policy": "everyone"})
    async with sockets(alice, bob) as (alice_live, bob_live):
        call = await within(
            alice_live.place_call(handle(bob), "audio", tracks=[AudioStreamTrack()])
        )
        incoming = await within(bob_live.next_incoming_call(WAIT))
        try:
            assert incoming.relay_only is True
            assert incoming.ice_servers, "the server did hand out (wrong) TURN credentials"
            await within(incoming.accept())
            # No error from aiortc: the relay-only side simply has no candidate at all.
            assert candidate_lines(incoming.local_sdp) == []
            await within(call.wait_answered())
            assert (await within(call.hang_up()))["reason"] == "hangup"
            assert (await within(incoming.wait_ended()))["state"] == "ended"
        finally:
            await close_all(call, incoming)
    assert "Cannot find credentials" in turn_server.log()


# --- Declined and cancelled ----------------------------------------------------------------------


async def test_the_callee_declines_then_the_caller_cancels_while_ringing(
    daphne_server: LiveServer,
) -> None:
    alice, bob = new_user(daphne_server, "alice"), new_user(daphne_server, "bob")
    follow(alice, bob)
    follow(bob, alice)
    async with sockets(alice, bob) as (alice_live, bob_live):
        call = await within(alice_live.place_call(handle(bob), "audio"))
        incoming = await within(bob_live.next_incoming_call(WAIT))
        try:
            declined = await within(incoming.decline())
            assert declined["state"] == "declined" and declined["reason"] == "declined"
            seen_by_alice = await within(call.wait_ended())
            assert seen_by_alice["reason"] == "declined" and seen_by_alice["duration"] is None
            assert call.pc.connectionState == "closed"
        finally:
            await close_all(call, incoming)

        call = await within(alice_live.place_call(handle(bob), "audio"))
        incoming = await within(bob_live.next_incoming_call(WAIT))
        try:
            assert incoming.call_id == call.call_id
            cancelled = await within(call.cancel())
            assert cancelled["state"] == "cancelled" and cancelled["reason"] == "cancelled"
            seen_by_bob = await within(incoming.wait_ended())
            assert seen_by_bob["call_id"] == call.call_id
            assert seen_by_bob["reason"] == "cancelled"
        finally:
            await close_all(call, incoming)


# --- What the server sees ------------------------------------------------------------------------


async def test_the_server_never_sees_sdp_candidates_or_fingerprints(
    daphne_server: LiveServer,
) -> None:
    marker = f"MARKER{uuid.uuid4().hex}"
    alice, bob = new_user(daphne_server, "alice"), new_user(daphne_server, "bob")
    follow(alice, bob)
    follow(bob, alice)
    async with sockets(alice, bob) as (alice_live, bob_live):
        call = await within(
            prepare_call(alice_live, handle(bob), "audio", tracks=[AudioStreamTrack()])
        )
        incoming: IncomingCall | None = None
        try:
            offer = call.local_sdp
            assert offer is not None and "\r\ns=-\r\n" in offer
            await within(call.invite(offer_sdp=offer.replace("\r\ns=-\r\n", f"\r\ns={marker}\r\n")))
            incoming = await within(bob_live.next_incoming_call(WAIT))
            assert f"s={marker}" in incoming.offer_sdp, "Bob opened the marked offer"
            await within(incoming.accept())
            await within(call.wait_answered())
            await within(
                call.send_candidate(f"candidate:{marker} 1 udp 2122260223 127.0.0.1 9 typ host")
            )
            candidate = await within(incoming.wait_candidate())
            assert marker in candidate["candidate"], "Bob opened the marked candidate"
            assert candidate["sdpMid"] == "0" and candidate["sdpMLineIndex"] == 0
            await within(call.wait_connected())
            await within(incoming.wait_connected())
            fingerprints = {
                sha256_fingerprint(call.local_sdp), sha256_fingerprint(incoming.local_sdp)
            }  # fmt: skip
            assert len(fingerprints) == 2
            await within(call.hang_up())
            await within(incoming.wait_ended())
        finally:
            await close_all(call, incoming)

    secrets_ = [marker, *fingerprints]
    secrets_ += [f.replace(":", "") for f in fingerprints]
    secrets_ += [f.replace(":", "").lower() for f in fingerprints]
    dump = await database_sync_to_async(database_dump)()
    assert dump, "the dump read something"
    log = daphne_server.log()
    for value in secrets_:
        assert not [row for row in dump if value.encode() in row], value
        assert value not in log, value


# --- Signaling that does not say what the frame says ------------------------------------------


def test_a_box_opens_only_for_the_call_step_devices_and_media_it_names() -> None:
    caller, callee = crypto.DeviceKeys.generate(), crypto.DeviceKeys.generate()
    call_id, other_call = str(uuid.uuid4()), str(uuid.uuid4())
    plaintext = signal_plaintext(
        "offer", call_id, caller.device_id, callee.device_id, media="audio", sdp="v=0"
    )
    boxed = crypto.box_to_device(plaintext, callee.box_public, caller.box_secret)
    expected: dict[str, Any] = {
        "kind": "offer", "call_id": call_id, "sender": caller.device_id,
        "recipient": callee.device_id, "sender_box_pub": crypto.b64u_encode(caller.box_public),
        "my_box_secret": callee.box_secret, "media": "audio",
    }  # fmt: skip
    assert open_signal(boxed, **expected)["sdp"] == "v=0"
    wrong: list[dict[str, Any]] = [
        {"call_id": other_call},  # replayed into another call
        {"kind": "answer"},  # replayed as another step
        {"media": "video"},  # rings audio for a video offer, or the reverse
        {"sender": callee.device_id},  # names another sender
        {"recipient": caller.device_id},  # meant for another device
        {"sender_box_pub": crypto.b64u_encode(crypto.DeviceKeys.generate().box_public)},
    ]
    for change in wrong:
        with pytest.raises(SignalingError):
            open_signal(boxed, **{**expected, **change})
    # Box keys are symmetric between two devices: the callee's own answer reflected back
    # to it opens under the caller's key, and is refused for naming it as its sender.
    answer = signal_plaintext("answer", call_id, callee.device_id, caller.device_id, sdp="v=0")
    reflected = crypto.box_to_device(answer, caller.box_public, callee.box_secret)
    with pytest.raises(SignalingError):
        open_signal(reflected, **{**expected, "kind": "answer", "media": None})


async def test_an_offer_boxed_for_other_media_than_the_call_rings_is_refused(
    daphne_server: LiveServer,
) -> None:
    alice, bob = new_user(daphne_server, "alice"), new_user(daphne_server, "bob")
    follow(bob, alice)
    async with sockets(alice, bob) as (alice_live, bob_live):
        call_id = str(uuid.uuid4())
        bob_devices = (await asyncio.to_thread(alice.directory, bob.user_id)).devices
        offers = {}
        for device_id, box_pub in bob_devices.items():
            plaintext = signal_plaintext(
                "offer", call_id, alice.device_id, device_id, media="video", sdp="v=0"
            )
            offers[device_id] = crypto.box_to_device(plaintext, box_pub, alice.device.box_secret)
        invite = {
            "type": "call.invite", "call_id": call_id, "callee": handle(bob), "media": "audio",
            "offers": offers,
        }  # fmt: skip
        ringing = await within(alice_live.request(invite))
        assert ringing["type"] == "call.ringing"
        with pytest.raises(SignalingError, match="video"):
            await within(bob_live.next_incoming_call(WAIT))
        cancelled = await within(alice_live.request({"type": "call.cancel", "call_id": call_id}))
        assert cancelled["reason"] == "cancelled"
