"""Voice and video calls (docs/calls.md, PROTOCOL.md section 7) on aiortc.

Media is WebRTC between this device and one device of the peer, DTLS-SRTP end to
end. The server rings and relays signaling it cannot read: every SDP and candidate
travels boxed from one device's box key to the other's, and is opened only with the
sender device's key as the sender's *verified* key directory lists it. The plaintext
names the call, the step and both devices (and, for an offer, the media), and is
refused unless they match the clear frame: a box proves who sealed it, not for which
call or step, so without this a server could replay an old offer, reflect a device's
own box back to it, or ring "audio" for a video offer. The DTLS fingerprint inside
an accepted SDP is therefore the peer device's, and the server cannot sit in the
middle of the media.

aiortc gathers every ICE candidate before ``setLocalDescription`` returns, so the
SDPs carry them all and this client never needs to trickle; it accepts trickled
candidates from the peer. ``iceServers`` is always set (aiortc adds a public STUN
server otherwise), and ``relay_only`` from the server means relay-only ICE, so the
peer learns the TURN server's address, never this device's.

aiortc is needed only here: ``parley_client.client`` imports this module lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp

from parley_client import crypto
from parley_client.client import (
    ApiError,
    DirectoryMismatch,
    FrameRefused,
    IdentityKeyChanged,
    LiveSocket,
)

logger = logging.getLogger(__name__)

SIGNAL_VERSION: Final = 1
MEDIA_KINDS: Final[Mapping[str, tuple[str, ...]]] = {
    "audio": ("audio",),
    "video": ("audio", "video"),
}
DATA_CHANNEL_LABEL: Final = "parley"
DEFAULT_TIMEOUT: Final = 20.0
INVITE_ATTEMPTS: Final = 3  # the callee's devices may change between directory and invite


class SignalingError(Exception):
    """Signaling the server relayed is not used: the box does not open under the
    sender device's verified key, or its plaintext names another call, step, device
    or media than the clear frame."""


class CallFailed(Exception):
    """The call ended, or its connection failed, before what was waited for."""


@dataclass(frozen=True)
class Peer:
    """The other party as the server names it (``id``, ``handle``, ``name``)."""

    id: str
    handle: str
    name: str

    @classmethod
    def from_frame(cls, data: Any) -> Peer:
        if not isinstance(data, Mapping):
            raise SignalingError("the frame does not name the other party")
        user_id = _id(data.get("id"))
        if user_id is None:
            raise SignalingError("the other party has no valid id")
        return cls(user_id, str(data.get("handle") or ""), str(data.get("name") or ""))


def _id(value: Any) -> str | None:
    """An id in canonical form, or ``None`` when it is not one."""
    try:
        return crypto.canonical_id(value)
    except (ValueError, TypeError, AttributeError):
        return None


def ice_configuration(ice_servers: Any, relay_only: bool) -> RTCConfiguration:
    """aiortc's configuration from the server's ``ice_servers``. Always with an
    explicit list (possibly empty), so aiortc adds no public STUN server of its own."""
    servers: list[RTCIceServer] = []
    for entry in ice_servers if isinstance(ice_servers, list) else []:
        if not isinstance(entry, Mapping):
            continue
        urls = entry.get("urls")
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(url, str) for url in urls):
            continue
        servers.append(
            RTCIceServer(
                urls=urls,
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
        )
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def signal_plaintext(kind: str, call_id: str, sender: str, recipient: str, **fields: Any) -> bytes:
    """The boxed payload's plaintext (docs/calls.md, "The boxed signaling payload")."""
    body = {
        "v": SIGNAL_VERSION, "type": kind, "call_id": call_id, "from": sender, "to": recipient,
        **fields,
    }  # fmt: skip
    return json.dumps(body, separators=(",", ":")).encode()


def open_signal(
    boxed: Any,
    *,
    kind: str,
    call_id: str,
    sender: str,
    recipient: str,
    sender_box_pub: str,
    my_box_secret: bytes,
    media: str | None = None,
) -> dict[str, Any]:
    """Open a boxed offer, answer or candidate and check it says what the clear frame
    says; ``SignalingError`` otherwise."""
    if not isinstance(boxed, str) or not boxed:
        raise SignalingError(f"no boxed {kind}")
    try:
        data = crypto.open_from_device(boxed, sender_box_pub, my_box_secret)
    except crypto.DecryptionError as exc:
        raise SignalingError(f"the {kind} does not open with the sender device's key") from exc
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SignalingError(f"the {kind} is not JSON") from exc
    if not isinstance(body, dict):
        raise SignalingError(f"the {kind} is not a JSON object")
    expected = {"v": SIGNAL_VERSION, "type": kind}
    for name, value in expected.items():
        if body.get(name) != value:
            raise SignalingError(f"the {kind}'s {name} is {body.get(name)!r}, not {value!r}")
    for name, value in {"call_id": call_id, "from": sender, "to": recipient}.items():
        if _id(body.get(name)) != value:
            raise SignalingError(f"the {kind} names another {name} than the frame")
    if kind == "offer" and body.get("media") != media:
        raise SignalingError(f"the offer is for {body.get('media')!r}, the call rings {media!r}")
    if kind in {"offer", "answer"} and not isinstance(body.get("sdp"), str):
        raise SignalingError(f"the {kind} has no SDP")
    if kind == "candidate":
        mid, index = body.get("sdpMid"), body.get("sdpMLineIndex")
        if not isinstance(body.get("candidate"), str):
            raise SignalingError("the candidate has no candidate string")
        if mid is not None and not isinstance(mid, str):
            raise SignalingError("the candidate's sdpMid is not a string")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise SignalingError("the candidate's sdpMLineIndex is not an integer")
    return body


async def _wait_any(within: float, *events: asyncio.Event) -> None:
    """Return when one of the events is set; ``TimeoutError`` after ``within`` seconds."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    if not done:
        raise TimeoutError


class Call:
    """One call between this device and one device of the peer.

    Events for the call arrive from the socket and are handled in order by one task
    (``call.accepted``, then candidates, then ``call.ended``). Remote tracks land in
    ``remote_tracks`` (``track_arrived`` is set at the first; drain them, aiortc
    buffers what nobody reads); the data channel, if any, in ``data_channel`` with its
    messages in ``data_messages``. On ``call.ended`` the peer connection is closed.
    """

    direction: ClassVar[str]

    def __init__(
        self,
        live: LiveSocket,
        *,
        call_id: str,
        media: str,
        peer: Peer,
        relay_only: bool,
        ice_servers: list[dict[str, Any]],
        peer_device: str | None = None,
        peer_box_pub: str | None = None,
    ) -> None:
        self.live = live
        self.call_id = call_id
        self.media = media
        self.peer = peer
        self.relay_only = relay_only
        self.ice_servers = ice_servers
        self.peer_device = peer_device
        self.remote_tracks: list[MediaStreamTrack] = []
        self.track_arrived = asyncio.Event()
        self.data_channel: RTCDataChannel | None = None
        self.data_channel_open = asyncio.Event()
        self.data_messages: asyncio.Queue[str | bytes] = asyncio.Queue()
        self.received_candidates: list[dict[str, Any]] = []  # opened and checked
        self.refused_signals: list[str] = []  # why relayed signaling was not used
        self.ended_frame: dict[str, Any] | None = None
        self._peer_box_pub = peer_box_pub
        self._pc: RTCPeerConnection | None = None
        self._connected = asyncio.Event()
        self._connection_failed = asyncio.Event()
        self._ended = asyncio.Event()
        self._candidate_arrived = asyncio.Event()
        self._events: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._pump = asyncio.create_task(self._run())
        live.register_call(call_id, self._deliver)

    # --- The peer connection ---------------------------------------------------------------

    @property
    def pc(self) -> RTCPeerConnection:
        if self._pc is None:
            raise RuntimeError("this call has no peer connection yet")
        return self._pc

    @property
    def local_sdp(self) -> str | None:
        description = self._pc.localDescription if self._pc is not None else None
        return description.sdp if description is not None else None

    @property
    def remote_sdp(self) -> str | None:
        description = self._pc.remoteDescription if self._pc is not None else None
        return description.sdp if description is not None else None

    @property
    def ended(self) -> bool:
        return self.ended_frame is not None

    def _build_pc(self) -> RTCPeerConnection:
        """The peer connection with the server's ICE servers, relay-only if asked."""
        pc = RTCPeerConnection(ice_configuration(self.ice_servers, self.relay_only))

        def on_track(track: MediaStreamTrack) -> None:
            self.remote_tracks.append(track)
            self.track_arrived.set()

        def on_state() -> None:
            if pc.connectionState == "connected":
                self._connected.set()
            elif pc.connectionState in {"failed", "closed"}:
                self._connection_failed.set()

        pc.on("track", on_track)
        pc.on("datachannel", self._use_channel)
        pc.on("connectionstatechange", on_state)
        self._pc = pc
        return pc

    def _use_channel(self, channel: RTCDataChannel) -> None:
        self.data_channel = channel
        channel.on("message", self.data_messages.put_nowait)
        if channel.readyState == "open":
            self.data_channel_open.set()
        else:
            channel.on("open", self.data_channel_open.set)

    def _add_media(self, pc: RTCPeerConnection, tracks: Sequence[MediaStreamTrack]) -> None:
        """Our tracks; for a kind of the call's media we send nothing of, still
        receive it."""
        for track in tracks:
            pc.addTrack(track)
        sent = {track.kind for track in tracks}
        for kind in MEDIA_KINDS[self.media]:
            if kind not in sent and not any(t.kind == kind for t in pc.getTransceivers()):
                pc.addTransceiver(kind, direction="recvonly")

    # --- Waiting ---------------------------------------------------------------------------

    async def wait_connected(self, within: float = DEFAULT_TIMEOUT) -> None:
        """Until ICE and DTLS are up (``connectionState`` "connected"). Raises
        ``CallFailed`` if the call ends or the connection fails first."""
        await _wait_any(within, self._connected, self._connection_failed, self._ended)
        if self._connected.is_set():
            return
        if self.ended_frame is not None:
            raise CallFailed(f"the call ended: {self.ended_frame.get('reason')}")
        raise CallFailed(f"the connection {self.pc.connectionState}")

    async def wait_ended(self, within: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The ``call.ended`` frame (``state``, ``reason``, ``duration``)."""
        await asyncio.wait_for(self._ended.wait(), within)
        assert self.ended_frame is not None
        return self.ended_frame

    async def next_remote_track(self, within: float = DEFAULT_TIMEOUT) -> MediaStreamTrack:
        """The first remote track."""
        await asyncio.wait_for(self.track_arrived.wait(), within)
        return self.remote_tracks[0]

    async def wait_data_channel(self, within: float = DEFAULT_TIMEOUT) -> RTCDataChannel:
        """The data channel, once open."""
        await asyncio.wait_for(self.data_channel_open.wait(), within)
        assert self.data_channel is not None
        return self.data_channel

    async def next_data(self, within: float = DEFAULT_TIMEOUT) -> str | bytes:
        """The next message on the data channel."""
        return await asyncio.wait_for(self.data_messages.get(), within)

    async def wait_candidate(self, within: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The first trickled candidate from the peer that opened and checked out."""
        await asyncio.wait_for(self._candidate_arrived.wait(), within)
        return self.received_candidates[0]

    # --- Signaling ---------------------------------------------------------------------------

    def _box(self, kind: str, **fields: Any) -> str:
        """A plaintext for the peer device, boxed to its verified key."""
        assert self.peer_device is not None
        assert self._peer_box_pub is not None
        plaintext = signal_plaintext(
            kind, self.call_id, self.live.client.device_id, self.peer_device, **fields
        )
        return crypto.box_to_device(
            plaintext, self._peer_box_pub, self.live.client.device.box_secret
        )

    async def send_candidate(
        self, candidate: str, sdp_mid: str | None = "0", sdp_mline_index: int | None = 0
    ) -> None:
        """Trickle one candidate (``""`` = end of candidates) to the peer device. aiortc
        puts every candidate in the SDP, so this is for other ICE agents and tests."""
        if self.peer_device is None or self._peer_box_pub is None:
            raise RuntimeError("candidates go to the peer device once the call is answered")
        boxed = self._box(
            "candidate", candidate=candidate, sdpMid=sdp_mid, sdpMLineIndex=sdp_mline_index
        )
        await self.live.send(
            {"type": "call.candidate", "call_id": self.call_id, "candidate": boxed}
        )

    async def hang_up(self, reason: str = "hangup") -> dict[str, Any]:
        """End an active call (``reason`` "hangup" or "failed"); returns ``call.ended``."""
        if self.ended_frame is not None:
            return self.ended_frame
        reply = await self.live.request(
            {"type": "call.hangup", "call_id": self.call_id, "reason": reason}
        )
        return await self._finish(reply)

    async def close(self) -> None:
        """Drop the call locally, without telling the server: stop handling its events
        and close the peer connection. For cleanup; ``hang_up`` ends a call."""
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        if self._pc is not None:
            await self._pc.close()

    # --- Events --------------------------------------------------------------------------------

    def _deliver(self, frame: dict[str, Any] | None) -> None:
        if self.ended_frame is None and not self._pump.done():
            self._events.put_nowait(frame)

    async def _run(self) -> None:
        while self.ended_frame is None:
            frame = await self._events.get()
            if frame is None:
                return  # the socket closed; the caller decides what to do
            try:
                await self._handle(frame)
            except SignalingError as exc:
                logger.warning("call signaling refused: %s", exc)
                self.refused_signals.append(str(exc))
            except Exception as exc:
                logger.exception("handling a %s frame failed", str(frame.get("type"))[:40])
                self.refused_signals.append(repr(exc))

    async def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "call.incoming":
            return  # the same call ringing again: nothing new
        if kind == "call.ended":
            await self._finish(frame)
        elif kind == "call.candidate":
            await self._on_candidate(frame)
        else:
            await self._on_event(frame)

    async def _on_event(self, frame: dict[str, Any]) -> None:
        """Events only one side gets (``call.accepted``, ``call.answered_elsewhere``)."""
        self.refused_signals.append(f"unexpected {str(frame.get('type'))[:40]}")

    async def _on_candidate(self, frame: dict[str, Any]) -> None:
        if self._pc is None or self.peer_device is None or self._peer_box_pub is None:
            raise SignalingError("a candidate before this device took part in the call")
        if _id(frame.get("from_device")) != self.peer_device:
            raise SignalingError("a candidate from another device than the peer's")
        body = open_signal(
            frame.get("candidate"), kind="candidate", call_id=self.call_id,
            sender=self.peer_device, recipient=self.live.client.device_id,
            sender_box_pub=self._peer_box_pub, my_box_secret=self.live.client.device.box_secret,
        )  # fmt: skip
        self.received_candidates.append(body)
        self._candidate_arrived.set()
        text: str = body["candidate"]
        if not text:
            await self._pc.addIceCandidate(None)  # end of candidates
            return
        try:
            candidate = candidate_from_sdp(text.removeprefix("candidate:"))
        except (AssertionError, ValueError, IndexError) as exc:
            raise SignalingError("the candidate string is malformed") from exc
        candidate.sdpMid = body.get("sdpMid")
        candidate.sdpMLineIndex = body.get("sdpMLineIndex")
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            raise SignalingError("the candidate names no media line")
        await self._pc.addIceCandidate(candidate)

    async def _finish(self, frame: dict[str, Any]) -> dict[str, Any]:
        """The call ended (a ``call.ended`` event or reply): close the connection."""
        if self.ended_frame is not None:
            # The reply and the event both end the call, and either may come first:
            # the other task is closing the connection; return once it is closed.
            await self._ended.wait()
            return self.ended_frame
        if frame.get("type") != "call.ended":
            raise SignalingError(f"expected call.ended, got {str(frame.get('type'))[:40]}")
        self.ended_frame = frame
        self._events.put_nowait(None)  # wakes the event task, which then stops
        if self._pc is None:
            self._ended.set()
            return frame
        # A task of its own: cancelling the event task (``close``) must not cut the
        # close short, which would leave aiortc's close future cancelled and
        # ``wait_ended`` waiting forever.
        closing = asyncio.ensure_future(self._pc.close())
        closing.add_done_callback(lambda _: self._ended.set())
        await asyncio.shield(closing)
        return frame


class OutgoingCall(Call):
    """A call this device placed. ``answered`` is set once the callee's answer opened,
    checked out and was applied."""

    direction = "outgoing"

    def __init__(self, live: LiveSocket, **kwargs: Any) -> None:
        super().__init__(live, **kwargs)
        self.answered = asyncio.Event()
        self.ring_deadline: str | None = None
        self.failure: SignalingError | None = None
        self._held_candidates: list[tuple[str, str | None, int | None]] = []

    async def invite(self, offer_sdp: str | None = None) -> dict[str, Any]:
        """Box the offer to each of the callee's verified devices and ring them.
        Returns ``call.ringing``, or ``call.ended`` (busy, glare). ``offer_sdp``
        replaces the local description's SDP (tests mark it)."""
        sdp = offer_sdp if offer_sdp is not None else self.local_sdp
        if sdp is None:
            raise RuntimeError("no local description to offer")
        client = self.live.client
        frame: dict[str, Any] = {}
        for attempt in range(INVITE_ATTEMPTS):
            directory = await asyncio.to_thread(client.directory, self.peer.id)
            offers = {
                device_id: crypto.box_to_device(
                    self._offer_plaintext(device_id, sdp), box_pub, client.device.box_secret
                )
                for device_id, box_pub in directory.devices.items()
            }
            frame = {
                "type": "call.invite", "call_id": self.call_id, "callee": self.peer.handle,
                "media": self.media, "offers": offers,
            }  # fmt: skip
            try:
                reply = await self.live.request(frame)
            except FrameRefused as error:
                if error.code == "device_list_changed" and attempt + 1 < INVITE_ATTEMPTS:
                    continue  # a device was added or revoked: fetch the directory again
                await self.close()
                raise
            if reply.get("type") == "call.ended":
                return await self._finish(reply)
            self.ring_deadline = reply.get("ring_deadline")
            return reply
        raise AssertionError("unreachable")

    def _offer_plaintext(self, device_id: str, sdp: str) -> bytes:
        """The offer for one callee device: each names its own recipient."""
        return signal_plaintext(
            "offer", self.call_id, self.live.client.device_id, device_id, media=self.media, sdp=sdp
        )

    async def wait_answered(self, within: float = DEFAULT_TIMEOUT) -> None:
        """Until the answer is applied; ``CallFailed`` if the call ends first."""
        await _wait_any(within, self.answered, self._ended)
        if not self.answered.is_set():
            reason = self.ended_frame.get("reason") if self.ended_frame else None
            raise CallFailed(f"the call ended unanswered: {reason}")

    async def wait_connected(self, within: float = DEFAULT_TIMEOUT) -> None:
        await self.wait_answered(within)
        await super().wait_connected(within)

    async def cancel(self) -> dict[str, Any]:
        """Stop ringing; returns ``call.ended`` (cancelled)."""
        if self.ended_frame is not None:
            return self.ended_frame
        reply = await self.live.request({"type": "call.cancel", "call_id": self.call_id})
        return await self._finish(reply)

    async def send_candidate(
        self, candidate: str, sdp_mid: str | None = "0", sdp_mline_index: int | None = 0
    ) -> None:
        """Before the answer, the candidate is kept and sent once it is applied (the
        server relays candidates only in an active call)."""
        if not self.answered.is_set():
            self._held_candidates.append((candidate, sdp_mid, sdp_mline_index))
            return
        await super().send_candidate(candidate, sdp_mid, sdp_mline_index)

    async def _on_event(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "call.accepted":
            await super()._on_event(frame)
            return
        if self.peer_device is not None:
            raise SignalingError("a second call.accepted")
        try:
            await self._apply_answer(frame)
        except SignalingError as exc:
            # An answer that does not check out is never applied: end the call.
            self.failure = exc
            with contextlib.suppress(FrameRefused):
                await self.hang_up("failed")
            raise
        self.answered.set()
        held, self._held_candidates = self._held_candidates, []
        for candidate in held:
            await super().send_candidate(*candidate)

    async def _apply_answer(self, frame: dict[str, Any]) -> None:
        device = _id(frame.get("callee_device"))
        if device is None:
            raise SignalingError("call.accepted names no callee device")
        client = self.live.client
        try:
            box_pub = await asyncio.to_thread(client.verified_box_key, self.peer.id, device)
        except (ApiError, IdentityKeyChanged, DirectoryMismatch) as exc:
            raise SignalingError(f"the callee's directory does not check out: {exc}") from exc
        if box_pub is None:
            raise SignalingError("the answering device is not in the callee's verified directory")
        body = open_signal(
            frame.get("answer"), kind="answer", call_id=self.call_id, sender=device,
            recipient=client.device_id, sender_box_pub=box_pub,
            my_box_secret=client.device.box_secret,
        )  # fmt: skip
        self.peer_device, self._peer_box_pub = device, box_pub
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))


class IncomingCall(Call):
    """A call ringing on this device, its offer opened and checked (``offer_sdp``).
    ``accept`` answers it; ``answered_elsewhere`` is set if another of the user's
    devices did."""

    direction = "incoming"

    def __init__(
        self, live: LiveSocket, *, offer_sdp: str, ring_deadline: str | None, **kwargs: Any
    ) -> None:
        super().__init__(live, **kwargs)
        self.offer_sdp = offer_sdp
        self.ring_deadline = ring_deadline
        self.answered_elsewhere = asyncio.Event()
        self._answering = False

    @property
    def caller(self) -> Peer:
        return self.peer

    @property
    def caller_device(self) -> str:
        assert self.peer_device is not None
        return self.peer_device

    @classmethod
    async def receive(cls, live: LiveSocket, frame: Mapping[str, Any]) -> IncomingCall:
        """Check a ``call.incoming`` frame and open its offer. ``SignalingError`` if
        anything is off; the call is then not answered (it rings out)."""
        call_id = _id(frame.get("call_id"))
        try:
            if call_id is None:
                raise SignalingError("call.incoming without a valid call id")
            caller = Peer.from_frame(frame.get("caller"))
            caller_device = _id(frame.get("caller_device"))
            media = frame.get("media")
            if caller_device is None:
                raise SignalingError("call.incoming names no caller device")
            if not isinstance(media, str) or media not in MEDIA_KINDS:
                raise SignalingError(f"unknown media {media!r}")
            client = live.client
            try:
                box_pub = await asyncio.to_thread(client.verified_box_key, caller.id, caller_device)
            except (ApiError, IdentityKeyChanged, DirectoryMismatch) as exc:
                raise SignalingError(f"the caller's directory does not check out: {exc}") from exc
            if box_pub is None:
                raise SignalingError("the calling device is not in the caller's verified directory")
            body = open_signal(
                frame.get("offer"), kind="offer", call_id=call_id, sender=caller_device,
                recipient=client.device_id, sender_box_pub=box_pub,
                my_box_secret=client.device.box_secret, media=media,
            )  # fmt: skip
        except SignalingError:
            if call_id is not None:
                live.release_call(call_id)
            raise
        ice_servers = frame.get("ice_servers")
        deadline = frame.get("ring_deadline")
        return cls(
            live, call_id=call_id, media=media, peer=caller,
            relay_only=frame.get("relay_only") is not False,  # relay unless told otherwise
            ice_servers=ice_servers if isinstance(ice_servers, list) else [],
            peer_device=caller_device, peer_box_pub=box_pub, offer_sdp=body["sdp"],
            ring_deadline=deadline if isinstance(deadline, str) else None,
        )  # fmt: skip

    async def accept(self, tracks: Sequence[MediaStreamTrack] = ()) -> IncomingCall:
        """Answer on this device: the peer connection (relay-only if the server says
        so), the answer boxed to the caller's device, ``call.accept``. Raises
        ``FrameRefused`` (e.g. ``call_answered_elsewhere``) if the server refuses."""
        if self.ended_frame is not None:
            raise CallFailed(f"the call already ended: {self.ended_frame.get('reason')}")
        pc = self._build_pc()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=self.offer_sdp, type="offer"))
        self._add_media(pc, tracks)
        await pc.setLocalDescription(await pc.createAnswer())
        answer = self._box("answer", sdp=pc.localDescription.sdp)
        # The server tells every socket of ours who answered, this one included: from
        # here on, that news is about us (a refusal comes back as FrameRefused).
        self._answering = True
        try:
            await self.live.request(
                {"type": "call.accept", "call_id": self.call_id, "answer": answer}
            )
        except FrameRefused:
            await pc.close()
            raise
        return self

    async def decline(self) -> dict[str, Any]:
        """Refuse the call; returns ``call.ended`` (declined)."""
        return await self._refuse("call.decline")

    async def busy(self) -> dict[str, Any]:
        """Refuse the call as busy; returns ``call.ended`` (busy)."""
        return await self._refuse("call.busy")

    async def _refuse(self, kind: str) -> dict[str, Any]:
        if self.ended_frame is not None:
            return self.ended_frame
        reply = await self.live.request({"type": kind, "call_id": self.call_id})
        return await self._finish(reply)

    async def _on_event(self, frame: dict[str, Any]) -> None:
        if frame.get("type") == "call.answered_elsewhere":
            if not self._answering:
                self.answered_elsewhere.set()
            return
        await super()._on_event(frame)


async def prepare_call(
    live: LiveSocket,
    handle: str,
    media: str = "audio",
    *,
    tracks: Sequence[MediaStreamTrack] = (),
    data_channel: bool = True,
) -> OutgoingCall:
    """Ask the server whether and how we may call (``call.prepare``), then build the
    peer connection and the offer (every candidate gathered). Nothing rings until
    ``invite``. Raises ``FrameRefused`` (``forbidden``, ``caller_busy``, ...)."""
    if media not in MEDIA_KINDS:
        raise ValueError(f"media is one of {sorted(MEDIA_KINDS)}")
    handle = handle.removeprefix("@")
    prepared = await live.request({"type": "call.prepare", "callee": handle, "media": media})
    ice_servers = prepared.get("ice_servers")
    call = OutgoingCall(
        live, call_id=str(uuid.uuid4()), media=media, peer=Peer.from_frame(prepared.get("callee")),
        relay_only=prepared.get("relay_only") is True,
        ice_servers=ice_servers if isinstance(ice_servers, list) else [],
    )  # fmt: skip
    try:
        pc = call._build_pc()
        call._add_media(pc, tracks)
        if data_channel:
            call._use_channel(pc.createDataChannel(DATA_CHANNEL_LABEL))
        await pc.setLocalDescription(await pc.createOffer())
    except BaseException:
        await call.close()
        raise
    return call


async def place_call(
    live: LiveSocket,
    handle: str,
    media: str = "audio",
    *,
    tracks: Sequence[MediaStreamTrack] = (),
    data_channel: bool = True,
) -> OutgoingCall:
    """Call a user: prepare, then ring every one of their devices. The returned call
    is ringing (or already ended: ``ended_frame``); ``wait_answered`` and
    ``wait_connected`` follow it."""
    call = await prepare_call(live, handle, media, tracks=tracks, data_channel=data_channel)
    await call.invite()
    return call
