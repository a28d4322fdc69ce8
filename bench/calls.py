"""Call setup time: two reference clients (``parley_client``, on aiortc) call each other
through a live server, one call after another, and every step is timed.

Each call goes the way the reference client places and answers one (docs/calls.md):
the caller's ``prepare_call`` (``call.prepare``, ICE gathering, the offer), then
``invite`` (the callee's key directory, one boxed offer per device, ``call.invite``);
the callee's ``next_incoming_call`` (the caller's directory, the offer opened and
checked) and ``accept`` (the answer, ``call.accept``); the caller applies the answer;
ICE and DTLS run between the two on loopback. Then the caller hangs up and the next
call starts only once both sides have seen ``call.ended`` and closed their peer
connections.

What is measured, with ``time.perf_counter()`` in this one process:

- ``setup_ms``: from just before the caller's ``invite`` (the offer is made, nothing
  rings yet) until **both** peers' ``connectionState`` is "connected", the moment the
  reference client's ``Call.wait_connected`` reports: ICE has a selected pair *and* the
  DTLS handshake is done, so media can flow. This is what the reference client exposes.
- ``ice_ms``: from the same start until both peers' ``iceConnectionState`` is
  "completed" (aiortc has no "connected" ICE state: it goes "checking" to "completed").
  A few milliseconds before ``setup_ms``: the difference is the DTLS handshake.
- ``ring_ms``: until the callee holds the checked offer, i.e. could ring.
- ``ringing_ms``: until the caller has the server's ``call.ringing`` reply.
- ``answered_ms``: until the callee's ``call.accept`` was acknowledged.
- ``prepare_ms``: ``prepare_call`` alone, before the start (a user pressing "call" waits
  for it too).
- ``hangup_ms``: from the caller's ``call.hangup`` until both sides are clean.

Both clients share one event loop, so their client-side work (crypto, aiortc) is
serialized: the numbers are an upper bound for two devices on two machines.

Without TURN the peers use host candidates on loopback (aioice offers no loopback
address of its own, so it is patched in for the run). The two users follow each other,
which the default call policy requires and which keeps the callee off relay-only ICE.

The server must allow more invites a minute than the run places:
``CALL_INVITES_PER_MINUTE`` (default 10; each call here is one invite and one
``call.prepare``). Each call also reads the key directory three times
(``THROTTLE_KEY_DIRECTORY``, 120/min per user, reached at about 60 calls a minute).

Run as ``python -m bench.calls --server http://127.0.0.1:PORT --calls 30``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import secrets
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

# The reference client is not an installed package: it lives beside the server.
_CLIENT_PATH = str(Path(__file__).resolve().parent.parent / "clients" / "python")
if _CLIENT_PATH not in sys.path:
    sys.path.insert(0, _CLIENT_PATH)

import aioice.ice  # noqa: E402
from aiortc import RTCPeerConnection  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack  # noqa: E402
from parley_client.calls import IncomingCall, OutgoingCall, prepare_call  # noqa: E402
from parley_client.client import ApiError, LiveSocket, ParleyClient  # noqa: E402

WAIT: Final = 20.0  # every wait is bounded: a stuck call is a failure, not a hang
CLEANUP_WAIT: Final = 5.0
MEDIA: Final = "audio"
ICE_DONE: Final = frozenset({"connected", "completed"})  # aiortc only ever says "completed"

T = TypeVar("T")


def _loopback_only(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """aioice's host addresses for the run: the peers are on this machine."""
    return ["127.0.0.1"]


async def _bounded(awaitable: Awaitable[T], within: float = WAIT) -> T:
    return await asyncio.wait_for(awaitable, within)


class _IceWatch:
    """When a peer connection's ICE first reached "completed"."""

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.at: float | None = None
        self.late = False
        self._pc = pc
        if pc.iceConnectionState in ICE_DONE:
            # Already done when we could first look: the time is an upper bound.
            self.at, self.late = time.perf_counter(), True
        else:
            pc.on("iceconnectionstatechange", self._changed)

    def _changed(self) -> None:
        if self.at is None and self._pc.iceConnectionState in ICE_DONE:
            self.at = time.perf_counter()


@dataclass
class _Attempt:
    """One call's objects and moments (``perf_counter`` seconds)."""

    call: OutgoingCall | None = None
    incoming: IncomingCall | None = None
    tracks: list[AudioStreamTrack] = field(default_factory=list)
    prepared_in: float = 0.0
    start: float = 0.0
    ringing: float = 0.0  # the caller got call.ringing
    ring: float = 0.0  # the callee holds the checked offer
    answered: float = 0.0  # the callee's call.accept was acknowledged
    connected: float = 0.0  # both connectionState "connected"
    ice: float | None = None  # both iceConnectionState "completed"
    ice_late: bool = False
    hangup_in: float = 0.0

    def sample(self) -> dict[str, float | None]:
        """Milliseconds from the start, the names of the result's keys."""

        def since(moment: float) -> float:
            return (moment - self.start) * 1000

        return {
            "setup_ms": since(self.connected),
            "ice_ms": since(self.ice) if self.ice is not None else None,
            "ring_ms": since(self.ring),
            "ringing_ms": since(self.ringing),
            "answered_ms": since(self.answered),
            "prepare_ms": self.prepared_in * 1000,
            "hangup_ms": self.hangup_in * 1000,
        }


class _CallFailed(Exception):
    """The call did not get set up, for the reason given."""


async def _answer(callee: LiveSocket, call_id: str, attempt: _Attempt) -> None:
    """The callee's side: take the call that rings for ``call_id`` and accept it."""
    while True:
        incoming = await callee.next_incoming_call(WAIT)
        if incoming.call_id == call_id:
            break
        # A call left over from an attempt that failed: refuse it, never answer it.
        with contextlib.suppress(Exception):
            await _bounded(incoming.decline(), CLEANUP_WAIT)
        await incoming.close()
        callee.release_call(incoming.call_id)
    attempt.incoming = incoming
    attempt.ring = time.perf_counter()
    track = AudioStreamTrack()
    attempt.tracks.append(track)
    await incoming.accept([track])
    attempt.answered = time.perf_counter()


async def _connected_at(wait: Awaitable[None]) -> float:
    await wait
    return time.perf_counter()


async def _one_call(
    caller: LiveSocket, callee: LiveSocket, callee_handle: str, attempt: _Attempt
) -> None:
    """Place, answer and connect one call, then hang up; fills ``attempt``."""
    began = time.perf_counter()
    track = AudioStreamTrack()  # silence: a voice call, as the client tests place one
    attempt.tracks.append(track)
    call = await _bounded(prepare_call(caller, callee_handle, MEDIA, tracks=[track]))
    attempt.call = call
    attempt.prepared_in = time.perf_counter() - began
    caller_ice = _IceWatch(call.pc)  # the offer is made, ICE waits for the answer

    # The callee listens before the invite goes out, as an idle device would.
    answering = asyncio.create_task(_answer(callee, call.call_id, attempt))
    try:
        attempt.start = time.perf_counter()
        reply = await _bounded(call.invite())
        attempt.ringing = time.perf_counter()
        if reply.get("type") == "call.ended":
            raise _CallFailed(f"ended at invite: {reply.get('reason')}")
        await _bounded(answering)
    finally:
        if not answering.done():
            answering.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answering
    incoming = attempt.incoming
    assert incoming is not None
    callee_ice = _IceWatch(incoming.pc)

    caller_at, callee_at = await asyncio.gather(
        _connected_at(call.wait_connected(WAIT)), _connected_at(incoming.wait_connected(WAIT))
    )
    attempt.connected = max(caller_at, callee_at)
    if caller_ice.at is not None and callee_ice.at is not None:
        attempt.ice = max(caller_ice.at, callee_ice.at)
    attempt.ice_late = caller_ice.late or callee_ice.late

    hanging_up = time.perf_counter()
    ended = await _bounded(call.hang_up())
    theirs = await _bounded(incoming.wait_ended(WAIT))
    if ended.get("reason") != "hangup" or theirs.get("reason") != "hangup":
        raise _CallFailed(f"ended with {ended.get('reason')} / {theirs.get('reason')}")
    if {call.pc.connectionState, incoming.pc.connectionState} != {"closed"}:
        raise _CallFailed("a peer connection is still open after call.ended")
    attempt.hangup_in = time.perf_counter() - hanging_up


async def _clean_up(caller: LiveSocket, callee: LiveSocket, attempt: _Attempt) -> None:
    """Leave nobody in a live call, whatever state a failed attempt stopped in, so the
    next invite does not find the caller busy."""
    call, incoming = attempt.call, attempt.incoming
    if call is not None and not call.ended:
        # hang_up ends an answered call, cancel a ringing one; the server refuses the other.
        for end in (call.hang_up, call.cancel):
            try:
                await _bounded(end(), CLEANUP_WAIT)
                break
            except Exception:  # noqa: S112 - refused or timed out: try the other
                continue
    if incoming is not None and not incoming.ended:
        with contextlib.suppress(Exception):
            await _bounded(incoming.wait_ended(CLEANUP_WAIT), CLEANUP_WAIT + 1)
    for each, live in ((call, caller), (incoming, callee)):
        if each is not None:
            with contextlib.suppress(Exception):  # timed out: count it, go on
                await _bounded(each.close(), CLEANUP_WAIT)
            live.release_call(each.call_id)
    for track in attempt.tracks:
        track.stop()


def _why(exc: BaseException) -> str:
    """A short failure reason to count."""
    if isinstance(exc, ApiError):  # FrameRefused too: the server's error code
        return f"{type(exc).__name__}:{exc.code}"
    if isinstance(exc, _CallFailed):
        return str(exc)
    # e.g. a SignalingError that wraps a refused directory read: keep what it says
    detail = str(exc)[:80]
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _limit_hit(reason: str) -> str | None:
    """What to raise on the server when a failure is one of its rate limits."""
    if "rate_limited" in reason:
        return "rate_limited: raise CALL_INVITES_PER_MINUTE on the server"
    if "throttled" in reason:
        return "throttled: most likely key directory reads, raise THROTTLE_KEY_DIRECTORY"
    return None


def _nearest_rank(ordered: list[float], pct: float) -> float:
    """The nearest-rank percentile of sorted values (with 30 values, p99 is the max)."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return dict.fromkeys(("p50", "p95", "p99", "min", "max", "mean"))
    ordered = sorted(values)
    found = {f"p{pct}": _nearest_rank(ordered, pct) for pct in (50, 95, 99)}
    found.update(min=ordered[0], max=ordered[-1], mean=sum(ordered) / len(ordered))
    return {name: round(value, 2) for name, value in found.items()}


async def _new_user(server_url: str, role: str, password: str) -> ParleyClient:
    """A fresh account with its first device, through the API (unique per run)."""
    handle = f"bc{role}_{secrets.token_hex(5)}"  # handles are at most 15 characters
    client = ParleyClient(server_url)
    # The last argument names the API token (the device list shows it).
    await asyncio.to_thread(client.sign_up, handle, f"{handle}@example.com", password, "bench")
    await asyncio.to_thread(client.set_up_keys, "bench")
    return client


async def measure_call_setup(
    *,
    server_url: str,
    calls: int = 30,
    log: Callable[[str], None] = print,
    warmup: int = 1,
) -> dict[str, Any]:
    """Place ``calls`` calls between two new users on ``server_url`` (after ``warmup``
    calls that are not counted: the first call of a process pays for imports and
    codec set-up) and return the timings in milliseconds (see the module docstring
    for each moment): ``{"calls": ok, "failures": k, "setup_ms": {"p50", "p95",
    "p99", "min", "max", "mean"}, "ice_ms": ..., ...}``."""
    original_host_addresses = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = _loopback_only
    password = secrets.token_urlsafe(18)
    clients: list[ParleyClient] = []
    sockets: list[LiveSocket] = []
    try:
        caller_client = await _new_user(server_url, "a", password)
        clients.append(caller_client)
        callee_client = await _new_user(server_url, "b", password)
        clients.append(callee_client)
        handles = [client.state.handle for client in clients]
        log(f"calls: users @{handles[0]} (caller) and @{handles[1]} (callee)")
        # The default call policy lets only people the callee follows ring; a callee who
        # does not follow the caller would also be put on relay-only ICE.
        await asyncio.to_thread(caller_client.request, "POST", f"/users/{handles[1]}/follow")
        await asyncio.to_thread(callee_client.request, "POST", f"/users/{handles[0]}/follow")
        for client in clients:
            sockets.append(await _bounded(client.connect()))
        caller, callee = sockets
        callee_handle = str(handles[1])

        samples: list[dict[str, float | None]] = []
        warmup_ms: list[float] = []
        errors: Counter[str] = Counter()
        ice_late = 0
        ice_servers: list[Any] = []
        relay_only = {"caller": False, "callee": False}
        aborted: str | None = None
        run_began = time.perf_counter()
        for number in range(-warmup + 1, calls + 1):
            label = f"warm-up {number + warmup}" if number <= 0 else f"call {number}/{calls}"
            attempt = _Attempt()
            try:
                await _one_call(caller, callee, callee_handle, attempt)
            except Exception as exc:
                reason = _why(exc)
                errors[reason] += 1
                log(f"calls: {label} failed: {reason}")
                await _clean_up(caller, callee, attempt)
                aborted = _limit_hit(reason)
                if aborted is not None:  # every later call would hit it too
                    log(f"calls: stopping, {aborted}")
                    break
                continue
            await _clean_up(caller, callee, attempt)
            sample = attempt.sample()
            if attempt.call is not None and attempt.incoming is not None:
                ice_servers = attempt.call.ice_servers
                relay_only = {
                    "caller": attempt.call.relay_only,
                    "callee": attempt.incoming.relay_only,
                }
            if number <= 0:
                warmup_ms.append(round(sample["setup_ms"] or 0.0, 2))
                log(f"calls: {label}: setup {sample['setup_ms']:.1f} ms (not counted)")
                continue
            samples.append(sample)
            ice_late += attempt.ice_late
            log(
                f"calls: {label}: setup {sample['setup_ms']:.1f} ms, ice "
                f"{sample['ice_ms'] or float('nan'):.1f}, ring {sample['ring_ms']:.1f}"
            )
        elapsed = time.perf_counter() - run_began

        counted_failures = sum(errors.values())
        result: dict[str, Any] = {
            "calls": len(samples),
            "failures": counted_failures,
            "requested": calls,
        }
        for key in (
            "setup_ms", "ice_ms", "ring_ms", "ringing_ms", "answered_ms", "prepare_ms",
            "hangup_ms",
        ):  # fmt: skip
            values = [value for s in samples if (value := s[key]) is not None]
            result[key] = _stats(values)
        result.update(
            measured=(
                "setup_ms: from just before call.invite until connectionState 'connected' "
                "(ICE + DTLS) on both peers; ice_ms: until iceConnectionState 'completed' "
                "on both"
            ),
            warmup_ms=warmup_ms,
            errors=dict(errors),
            ice_late=ice_late,  # ICE was done before its watch could attach (upper bound)
            turn_offered=bool(ice_servers),
            relay_only=relay_only,
            media=MEDIA,
            seconds=round(elapsed, 2),
        )
        if aborted is not None:
            result["aborted"] = aborted
        return result
    finally:
        for live in sockets:
            with contextlib.suppress(Exception):
                await live.close()
        for client in clients:
            client.close()
        aioice.ice.get_host_addresses = original_host_addresses


def main() -> None:
    parser = argparse.ArgumentParser(description="Call setup time between two reference clients.")
    parser.add_argument("--server", required=True, help="the server's URL, http://host:port")
    parser.add_argument("--calls", type=int, default=30, help="calls to time")
    parser.add_argument("--warmup", type=int, default=1, help="calls first, not counted")
    args = parser.parse_args()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # stdout is for the JSON

    result = asyncio.run(
        measure_call_setup(server_url=args.server, calls=args.calls, log=log, warmup=args.warmup)
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
