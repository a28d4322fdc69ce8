"""Every write of the calls app: the call state machine (docs/calls.md).

The server decides who may ring whom, keeps the record and relays signaling. The
SDPs and candidates it relays are boxed from one device to another: it cannot read
them, and clients refuse any it altered.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import Device, User
from accounts.selectors import (
    CALL_REFUSALS,
    call_permission,
    device_get_active,
    refusal_text,
    relationship_get,
    user_get_visible,
)
from calls import selectors
from calls.models import Call
from common.errors import ApplicationError, Conflict, NotFound, PermissionDenied, RateLimited
from notifications import services as notification_services
from realtime.publish import publish_on_commit, publish_to_device_on_commit

State = Call.State
Reason = Call.EndReason


class Action(StrEnum):
    ACCEPT = "accept"
    DECLINE = "decline"
    BUSY = "busy"
    CANCEL = "cancel"
    HANGUP = "hangup"
    TIMEOUT = "timeout"
    GLARE = "glare"
    FAIL = "fail"


# The state machine: (state, action) -> (new state, end reason). Nothing else is legal.
TRANSITIONS: dict[tuple[str, Action], tuple[str, str]] = {
    (State.RINGING, Action.ACCEPT): (State.ACTIVE, ""),
    (State.RINGING, Action.DECLINE): (State.DECLINED, Reason.DECLINED),
    (State.RINGING, Action.BUSY): (State.BUSY, Reason.BUSY),
    (State.RINGING, Action.CANCEL): (State.CANCELLED, Reason.CANCELLED),
    (State.RINGING, Action.TIMEOUT): (State.MISSED, Reason.TIMEOUT),
    (State.RINGING, Action.GLARE): (State.CANCELLED, Reason.GLARE),
    (State.RINGING, Action.FAIL): (State.FAILED, Reason.FAILED),
    (State.ACTIVE, Action.HANGUP): (State.ENDED, Reason.HANGUP),
    (State.ACTIVE, Action.FAIL): (State.ENDED, Reason.FAILED),
}
# Reasons a caller may give instead of the transition's own.
REASONS_ALLOWED = {
    Action.HANGUP: {Reason.HANGUP, Reason.FAILED},
    Action.FAIL: {Reason.FAILED, Reason.CONNECTION_LOST, Reason.UNAVAILABLE},
}

MAX_OFFER_BYTES = 64 * 1024
MAX_CANDIDATE_BYTES = 4 * 1024


def _refuse_transition(call: Call, action: Action) -> ApplicationError:
    return Conflict(
        "illegal_transition",
        f"Cannot {action.value} a call that is {call.get_state_display().lower()}.",
        field="call_id",
        extra={"state": call.state},
    )


def transition(call: Call, action: Action, *, now: datetime, reason: str | None = None) -> Call:
    """Move ``call`` (locked by the caller) through the table, or refuse. Ending a
    call erases the boxed SDPs it held. Saves; publishing is the caller's job."""
    target = TRANSITIONS.get((call.state, action))
    if target is None:
        raise _refuse_transition(call, action)
    state, end_reason = target
    if reason is not None:
        if reason not in REASONS_ALLOWED.get(action, set()):
            raise ApplicationError(
                "invalid", f"{reason!r} is not a reason to {action.value}.", field="reason"
            )
        end_reason = reason
    call.state = state
    call.end_reason = end_reason
    if state == State.ACTIVE:
        call.answered_at = now
    else:
        call.ended_at = now
        call.offers = {}
        call.answer = ""
    call.save(update_fields=["state", "end_reason", "answered_at", "ended_at", "offers", "answer"])
    return call


def ended_event(call: Call) -> dict[str, Any]:
    return {
        "type": "call.ended",
        "call_id": str(call.pk),
        "state": call.state,
        "reason": call.end_reason,
        "duration": call.duration,
    }


def _publish_ended(call: Call) -> None:
    publish_on_commit(user_ids=[call.caller_id, call.callee_id], event=ended_event(call))
    if call_was_missed(call):
        notification_services.call_missed_on_commit(call_id=call.pk)


def call_was_missed(call: Call) -> bool:
    """The callee never picked up nor turned it down: no answer, busy, or the caller
    gave up while it rang (glare is no one's missed call)."""
    return call.state in (State.MISSED, State.BUSY) or (
        call.state == State.CANCELLED and call.end_reason == Reason.CANCELLED
    )


def _close_if_due(call: Call, *, now: datetime) -> bool:
    """Store what reads already assume: a ringing call past its deadline is missed.
    True if it closed the (locked) call."""
    if call.state == State.RINGING and call.ring_deadline <= now:
        transition(call, Action.TIMEOUT, now=now)
        _publish_ended(call)
        return True
    return False


def _stale_active_calls(now: datetime) -> Q:
    """Active calls whose devices are gone: revoked (at once), or neither seen for
    CALL_STALE_SECONDS after the answer (a crashed client must not keep its user busy)."""
    seen_after = now - timedelta(seconds=settings.CALL_STALE_SECONDS)
    gone = (
        Q(caller_device__isnull=True)
        | Q(callee_device__isnull=True)
        | Q(caller_device__revoked_at__isnull=False)
        | Q(callee_device__revoked_at__isnull=False)
    )
    unseen = (
        Q(answered_at__lte=seen_after)
        & ~Q(caller_device__last_seen_at__gt=seen_after)
        & ~Q(callee_device__last_seen_at__gt=seen_after)
    )
    return Q(state=State.ACTIVE) & (gone | unseen)


def _locked(call_id: uuid.UUID, *, user: User | None, now: datetime) -> Call:
    """The call, row-locked, with a ringing call past its deadline already marked
    missed (so every action sees the truth). ``user`` must be a party."""
    calls = Call.objects.select_for_update().filter(pk=call_id)
    if user is not None:
        calls = calls.filter(Q(caller=user) | Q(callee=user))
    call = calls.first()
    if call is None:
        raise NotFound("call_not_found", "No such call.", field="call_id")
    _close_if_due(call, now=now)
    return call


def _count(key: str, limit: int) -> None:
    """A fixed one-minute window per key, in the cache (shared by every process)."""
    cache.add(key, 0, timeout=60)
    try:
        used = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=60)
        used = 1
    if used > limit:
        raise RateLimited("rate_limited", "Too many calls; wait a minute.", retry_after=60)


# --- Placing a call --------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    callee: User
    ice_servers: list[dict[str, Any]]
    relay_only: bool


def _live_calls(users: list[User], now: datetime) -> list[Call]:
    """Live calls involving any of ``users``, locked. Calls that are over in all but
    name (rung out, or active with their devices gone) are closed on the way and do
    not count, so no one stays busy because a sweep has not run."""
    ids = [user.pk for user in users]
    involving = Q(caller_id__in=ids) | Q(callee_id__in=ids)
    stale = set(
        Call.objects.filter(involving).filter(_stale_active_calls(now)).values_list("pk", flat=True)
    )
    calls = list(
        Call.objects.select_for_update()
        .filter(involving, state__in=Call.LIVE_STATES)
        .order_by("pk")
    )
    live = []
    for call in calls:
        if call.pk in stale:
            transition(call, Action.FAIL, now=now, reason=Reason.CONNECTION_LOST)
            _publish_ended(call)
        elif not _close_if_due(call, now=now):
            live.append(call)
    return live


def _in_a_call(user: User, calls: list[Call], *, ignoring: Call | None = None) -> bool:
    """Talking, or dialling someone: an incoming call that only rings is not busy."""
    for call in calls:
        if call is ignoring:
            continue
        if call.state == State.ACTIVE and user.pk in (call.caller_id, call.callee_id):
            return True
        if call.state == State.RINGING and call.caller_id == user.pk:
            return True
    return False


def _check_may_call(*, caller: User, callee: User) -> tuple[bool, bool]:
    """Refuse what privacy settings, blocks and relay configuration forbid; return
    the two sides' relay-only flags."""
    rel = relationship_get(viewer=caller, target=callee)
    decision = call_permission(caller=caller, callee=callee, rel=rel)
    if not decision.allowed:
        raise PermissionDenied(
            decision.reason, refusal_text(CALL_REFUSALS, decision.reason, callee.handle)
        )
    relay_caller = selectors.caller_relay_only(caller=caller)
    relay_callee = selectors.callee_relay_only(
        callee=callee, caller=caller, follows_caller=rel.followed_by
    )
    if (relay_caller or relay_callee) and not selectors.relay_available():
        raise Conflict(
            "relay_unavailable",
            "This call must go through a relay server to keep an address private, "
            "and this server has none configured.",
        )
    return relay_caller, relay_callee


def _active_device_ids(user: User) -> set[str]:
    return {
        str(device_id)
        for device_id in Device.objects.filter(user=user, revoked_at__isnull=True).values_list(
            "pk", flat=True
        )
    }


def _callee(caller: User, handle: str) -> User:
    try:
        return user_get_visible(viewer=caller, handle=handle)
    except NotFound as exc:
        raise NotFound(exc.code, exc.message, field="callee") from exc


@transaction.atomic
def call_prepare(*, caller: User, callee_handle: str, media: str) -> Prepared:
    """Everything a caller's client needs before it builds an offer: the checks an
    invite will make (so a refusal comes before any camera turns on), TURN
    credentials and the caller's relay flag. Stores nothing."""
    _count(f"call-prepare:{caller.pk}", settings.CALL_INVITES_PER_MINUTE * 2)
    # The settings as stored now, not a socket's copy from when it connected: the
    # caller may have just turned "relay calls" on.
    caller = User.objects.get(pk=caller.pk)
    callee = _callee(caller, callee_handle)
    relay_caller, _ = _check_may_call(caller=caller, callee=callee)
    if _in_a_call(caller, _live_calls([caller], timezone.now())):
        raise Conflict("caller_busy", "You are already in a call.")
    if not _active_device_ids(callee):
        raise Conflict("callee_unreachable", f"@{callee.handle} has no device to ring.")
    return Prepared(
        callee=callee, ice_servers=selectors.ice_servers_for(user=caller), relay_only=relay_caller
    )


@transaction.atomic
def call_invite(
    *,
    caller: User,
    caller_device_id: uuid.UUID,
    call_id: uuid.UUID,
    callee_handle: str,
    media: str,
    offers: dict[str, str],
) -> Call:
    """Ring every active device of the callee with its own boxed offer.

    Returns the stored call: ``ringing``, or already over when the callee was busy or
    the other side's call won the glare.
    """
    now = timezone.now()
    _count(f"call-invite:{caller.pk}", settings.CALL_INVITES_PER_MINUTE)
    callee = _callee(caller, callee_handle)
    # Both users' rows locked, in a fixed order: invites between the same people (and
    # glare) are decided one at a time. The rows read here are the settings as they
    # are now, not a socket's copy from when it connected.
    locked = {
        user.pk: user
        for user in User.objects.select_for_update()
        .filter(pk__in=[caller.pk, callee.pk])
        .order_by("pk")
    }
    caller, callee = locked[caller.pk], locked[callee.pk]
    _, relay_callee = _check_may_call(caller=caller, callee=callee)
    if Call.objects.filter(pk=call_id).exists():
        raise Conflict("call_exists", "A call with this id exists.", field="call_id")
    caller_device = device_get_active(user=caller, device_id=caller_device_id)
    if caller_device is None:
        raise PermissionDenied("device_revoked", "This device is not active.")
    live = _live_calls([caller, callee], now)
    glare = next(
        (
            call
            for call in live
            if call.state == State.RINGING
            and call.caller_id == callee.pk
            and call.callee_id == caller.pk
        ),
        None,
    )
    if _in_a_call(caller, live, ignoring=glare):
        raise Conflict("caller_busy", "You are already in a call.")
    devices = _active_device_ids(callee)
    if not devices:
        raise Conflict("callee_unreachable", f"@{callee.handle} has no device to ring.")
    if set(offers) != devices:
        raise Conflict(
            "device_list_changed",
            f"Box the offer to each of @{callee.handle}'s devices, and only those.",
            field="offers",
            extra={"device_ids": sorted(devices)},
        )
    call = Call(
        id=call_id,
        caller=caller,
        callee=callee,
        caller_device=caller_device,
        media=media,
        created_at=now,
        ring_deadline=now + timedelta(seconds=settings.CALL_RING_SECONDS),
    )
    if glare is not None:
        # Both called each other: the lower id goes on, the other ends as glare.
        if str(glare.pk) < str(call_id):
            call.state, call.end_reason, call.ended_at = State.CANCELLED, Reason.GLARE, now
            _insert(call)
            _publish_ended(call)
            return call
        transition(glare, Action.GLARE, now=now)
        _publish_ended(glare)
    elif _in_a_call(callee, live):
        call.state, call.end_reason, call.ended_at = State.BUSY, Reason.BUSY, now
        _insert(call)
        _publish_ended(call)
        return call
    call.offers = offers
    _insert(call)
    _ring(call, relay_only=relay_callee)
    from calls.tasks import schedule_ring_timeout  # tasks import services

    # Robust: with the broker down the call still rings (it is stored), and the periodic
    # calls.close_stale_calls ends it past its deadline; no 503 after the commit.
    transaction.on_commit(
        lambda: schedule_ring_timeout(call.pk, settings.CALL_RING_SECONDS), robust=True
    )
    return call


def _insert(call: Call) -> None:
    """Store a new call; an id that another invite took meanwhile is refused (two
    invites between other people share no lock, so the check above can race)."""
    try:
        with transaction.atomic():
            call.save(force_insert=True)
    except IntegrityError as exc:
        raise Conflict("call_exists", "A call with this id exists.", field="call_id") from exc


def _ring(call: Call, *, relay_only: bool) -> None:
    event = {"type": "call.incoming", **selectors.incoming_fields(call, relay_only=relay_only)}
    event["_per_device"] = {device_id: {"offer": offer} for device_id, offer in call.offers.items()}
    publish_on_commit(user_ids=[call.callee_id], event=event)


# --- Answering and ending ----------------------------------------------------------------------


def _callee_device(user: User, device_id: uuid.UUID, call: Call, *, lock: bool = False) -> Device:
    """The callee's active device; locked when it is to hold the call (a revocation
    then waits for the answer, and ends the call it finds)."""
    if call.callee_id != user.pk:
        raise PermissionDenied("not_callee", "Only the person called can do this.")
    devices = Device.objects.select_for_update() if lock else Device.objects
    device = devices.filter(pk=device_id, user=user, revoked_at__isnull=True).first()
    if device is None:
        raise PermissionDenied("device_revoked", "This device is not active.")
    return device


def _check_callee_device(user: User, device_id: uuid.UUID) -> Callable[[Call], None]:
    def check(call: Call) -> None:
        _callee_device(user, device_id, call)

    return check


@transaction.atomic
def call_accept(*, user: User, device_id: uuid.UUID, call_id: uuid.UUID, answer: str) -> Call:
    """The first callee device to accept gets the call; the others stop ringing."""
    now = timezone.now()
    call = _locked(call_id, user=user, now=now)
    device = _callee_device(user, device_id, call, lock=True)
    if call.state == State.ACTIVE:
        raise Conflict(
            "call_answered_elsewhere", "This call was answered on another device.",
            field="call_id",
        )  # fmt: skip
    if call.state == State.RINGING and str(device.pk) not in call.offers:
        raise PermissionDenied("not_rung", "This device was not rung for this call.")
    transition(call, Action.ACCEPT, now=now)
    call.callee_device = device
    call.answer = answer
    call.save(update_fields=["callee_device", "answer"])
    publish_to_device_on_commit(
        device_id=call.caller_device_id,
        event={
            "type": "call.accepted",
            "call_id": str(call.pk),
            "callee_device": str(device.pk),
            "answer": answer,
        },
    )
    # Every socket of the callee, not only its other devices: two tabs of one browser
    # are one device, and the one that did not answer must stop ringing too.
    publish_on_commit(
        user_ids=[call.callee_id],
        event={
            "type": "call.answered_elsewhere",
            "call_id": str(call.pk),
            "callee_device": str(device.pk),
        },
    )
    return call


def _end(
    *,
    user: User,
    call_id: uuid.UUID,
    action: Action,
    check: Callable[[Call], None],
    reason: str | None = None,
) -> Call:
    now = timezone.now()
    call = _locked(call_id, user=user, now=now)
    check(call)
    transition(call, action, now=now, reason=reason)
    _publish_ended(call)
    return call


@transaction.atomic
def call_decline(*, user: User, device_id: uuid.UUID, call_id: uuid.UUID) -> Call:
    """The callee turns the call down, from any of their devices: it stops ringing
    everywhere."""
    return _end(
        user=user, call_id=call_id, action=Action.DECLINE,
        check=_check_callee_device(user, device_id),
    )  # fmt: skip


@transaction.atomic
def call_busy(*, user: User, device_id: uuid.UUID, call_id: uuid.UUID) -> Call:
    """A callee device says it is busy (say, in a call outside Parley)."""
    return _end(
        user=user, call_id=call_id, action=Action.BUSY,
        check=_check_callee_device(user, device_id),
    )  # fmt: skip


def _check_caller_device(device_id: uuid.UUID) -> Callable[[Call], None]:
    def check(call: Call) -> None:
        if call.caller_device_id != device_id:
            raise PermissionDenied("not_call_device", "This call is on another device.")

    return check


@transaction.atomic
def call_cancel(*, user: User, device_id: uuid.UUID, call_id: uuid.UUID) -> Call:
    """The caller gives up before anyone answered."""
    return _end(
        user=user, call_id=call_id, action=Action.CANCEL, check=_check_caller_device(device_id)
    )


def _check_party_device(device_id: uuid.UUID) -> Callable[[Call], None]:
    def check(call: Call) -> None:
        if device_id not in (call.caller_device_id, call.callee_device_id):
            raise PermissionDenied("not_call_device", "This call is on another device.")

    return check


@transaction.atomic
def call_hangup(
    *, user: User, device_id: uuid.UUID, call_id: uuid.UUID, reason: str = Reason.HANGUP
) -> Call:
    """Either side ends a call in progress (``failed`` when the connection could not
    be made or was lost)."""
    return _end(
        user=user, call_id=call_id, action=Action.HANGUP,
        check=_check_party_device(device_id), reason=reason,
    )  # fmt: skip


def call_relay_candidate(
    *, user: User, device_id: uuid.UUID, call_id: uuid.UUID, candidate: str
) -> None:
    """Pass a boxed ICE candidate to the other device of a call in progress. Never
    stored."""
    call = Call.objects.filter(Q(caller=user) | Q(callee=user), pk=call_id).first()
    if call is None:
        raise NotFound("call_not_found", "No such call.", field="call_id")
    _check_party_device(device_id)(call)
    if call.state != State.ACTIVE:
        raise _refuse_transition_for_candidate(call)
    peer = call.callee_device_id if device_id == call.caller_device_id else call.caller_device_id
    publish_to_device_on_commit(
        device_id=peer,
        event={
            "type": "call.candidate",
            "call_id": str(call.pk),
            "from_device": str(device_id),
            "candidate": candidate,
        },
    )


def _refuse_transition_for_candidate(call: Call) -> ApplicationError:
    return Conflict(
        "call_not_active",
        f"Candidates go only to a call in progress; this one is "
        f"{call.get_state_display().lower()}.",
        field="call_id",
        extra={"state": call.state},
    )


# --- Background ------------------------------------------------------------------------------


@transaction.atomic
def call_ring_timeout(*, call_id: uuid.UUID) -> bool:
    """Mark a call missed if it still rings past its deadline. Idempotent: early, late
    and repeated runs change nothing else. True if this run marked it."""
    now = timezone.now()
    call = Call.objects.select_for_update().filter(pk=call_id).first()
    if call is None or call.state != State.RINGING or call.ring_deadline > now:
        return False
    transition(call, Action.TIMEOUT, now=now)
    _publish_ended(call)
    return True


@transaction.atomic
def calls_close_stale() -> int:
    """Periodic: store what reads already assume (ringing past the deadline is
    missed) and end active calls whose devices are gone (``connection_lost``)."""
    now = timezone.now()
    closed = 0
    for call in Call.objects.select_for_update(skip_locked=True).filter(
        state=State.RINGING, ring_deadline__lte=now
    ):
        closed += _close_if_due(call, now=now)
    # Read through the device joins, then lock the rows alone (PostgreSQL cannot lock
    # the nullable side of an outer join); a call ended meanwhile no longer matches.
    stale_ids = list(Call.objects.filter(_stale_active_calls(now)).values_list("pk", flat=True))
    stale = Call.objects.filter(pk__in=stale_ids, state=State.ACTIVE)
    return closed + _fail_all(stale, reason=Reason.CONNECTION_LOST)


def _fail_all(calls: Any, *, reason: str) -> int:
    """End each of these (live) calls for ``reason``, locked; how many ended."""
    now = timezone.now()
    ended = 0
    for call in calls.select_for_update():
        transition(call, Action.FAIL, now=now, reason=reason)
        _publish_ended(call)
        ended += 1
    return ended


def calls_end_for_user(*, user_id: uuid.UUID) -> int:
    """A suspended or banned account leaves every call it is in or placing, and stops
    ringing where it is called (``unavailable``)."""
    return _fail_all(
        Call.objects.filter(
            Q(caller_id=user_id) | Q(callee_id=user_id), state__in=Call.LIVE_STATES
        ),
        reason=Reason.UNAVAILABLE,
    )


def calls_end_for_device(*, device_id: uuid.UUID) -> int:
    """A device that is revoked leaves its calls: one it placed stops ringing, one it
    is in ends (``unavailable``). Runs inside the revoking transaction."""
    return _fail_all(
        Call.objects.filter(
            Q(caller_device_id=device_id) | Q(callee_device_id=device_id),
            state__in=Call.LIVE_STATES,
        ),
        reason=Reason.UNAVAILABLE,
    )
