"""Reads of the calls app: history, calls ringing for a device, ICE servers."""

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.utils import timezone

from accounts.models import Follow, User
from calls.models import Call
from common.errors import NotFound


def ice_servers_for(*, user: User) -> list[dict[str, Any]]:
    """TURN credentials for one party of a call (TURN REST scheme, PROTOCOL.md
    section 7): username ``"{expiry}:{user_id}"``, credential
    ``b64(HMAC-SHA1(TURN_SECRET, username))``. Empty when no TURN server is set."""
    if not settings.TURN_URLS or not settings.TURN_SECRET:
        return []
    expiry = int(time.time()) + settings.TURN_CREDENTIAL_SECONDS
    username = f"{expiry}:{user.pk}"
    digest = hmac.new(settings.TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return [
        {
            "urls": list(settings.TURN_URLS),
            "username": username,
            "credential": base64.b64encode(digest).decode(),
        }
    ]


def relay_available() -> bool:
    return bool(settings.TURN_URLS and settings.TURN_SECRET)


def caller_relay_only(*, caller: User) -> bool:
    return caller.relay_calls


def callee_relay_only(*, callee: User, caller: User, follows_caller: bool | None = None) -> bool:
    """A stranger never learns the callee's address by calling: relay-only unless the
    callee follows the caller, and always when the callee chose it. ``follows_caller``
    saves the lookup when the caller already knows it."""
    if callee.relay_calls:
        return True
    if follows_caller is None:
        follows_caller = Follow.objects.filter(follower=callee, followee=caller).exists()
    return not follows_caller


def incoming_fields(call: Call, *, relay_only: bool) -> dict[str, Any]:
    """What a ringing device needs but its own offer (``call.incoming``, and the
    ringing list of the API). ``ring_seconds`` is what is left of the ring, so a client
    whose clock is off does not drop the call."""
    left = (call.ring_deadline - timezone.now()).total_seconds()
    return {
        "call_id": str(call.pk),
        "caller": {
            "id": str(call.caller.pk),
            "handle": call.caller.handle,
            "name": call.caller.name,
        },
        "caller_device": str(call.caller_device_id),
        "media": call.media,
        "ice_servers": ice_servers_for(user=call.callee),
        "relay_only": relay_only,
        "ring_deadline": call.ring_deadline.isoformat(),
        "ring_seconds": max(0, int(left)),
    }


def _is_party(user: User) -> Q:
    return Q(caller=user) | Q(callee=user)


def calls_of(*, user: User, peer_id: uuid.UUID | None = None) -> QuerySet[Call]:
    """The user's calls, newest first, with both parties in the same query."""
    calls = Call.objects.filter(_is_party(user)).select_related("caller", "callee")
    if peer_id is not None:
        calls = calls.filter(Q(caller_id=peer_id) | Q(callee_id=peer_id))
    return calls.order_by("-created_at")


def call_get_for_party(*, user: User, call_id: uuid.UUID) -> Call:
    call = Call.objects.filter(_is_party(user), pk=call_id).select_related("caller", "callee")
    found = call.first()
    if found is None:
        raise NotFound("call_not_found", "No such call.", field="call_id")
    return found


def calls_ringing_for_device(*, user: User, device_id: uuid.UUID) -> list[Call]:
    """Calls ringing now for this device (one it was rung on: it has an offer)."""
    return list(
        Call.objects.filter(
            callee=user,
            state=Call.State.RINGING,
            ring_deadline__gt=timezone.now(),
            offers__has_key=str(device_id),
        ).select_related("caller", "callee")
    )


@dataclass(frozen=True)
class CallView:
    """One call as one of its parties sees it."""

    call: Call
    viewer: User

    @property
    def id(self) -> uuid.UUID:
        return self.call.pk

    @property
    def direction(self) -> str:
        return "outgoing" if self.call.caller_id == self.viewer.pk else "incoming"

    @property
    def peer(self) -> User:
        return self.call.callee if self.direction == "outgoing" else self.call.caller

    @property
    def state(self) -> str:
        # A ringing call past its deadline is missed, whether or not the task has run.
        if self.call.state == Call.State.RINGING and not self.call.is_ringing_now():
            return Call.State.MISSED
        return self.call.state

    @property
    def end_reason(self) -> str:
        if self.state == Call.State.MISSED and not self.call.end_reason:
            return Call.EndReason.TIMEOUT
        return self.call.end_reason

    @property
    def missed(self) -> bool:
        """An incoming call the viewer never picked up nor turned down."""
        if self.direction != "incoming":
            return False
        return self.state in (Call.State.MISSED, Call.State.BUSY) or (
            self.state == Call.State.CANCELLED and self.end_reason == Call.EndReason.CANCELLED
        )

    @property
    def media(self) -> str:
        return self.call.media

    @property
    def created_at(self) -> Any:
        return self.call.created_at

    @property
    def answered_at(self) -> Any:
        return self.call.answered_at

    @property
    def ended_at(self) -> Any:
        return self.call.ended_at

    @property
    def duration(self) -> int | None:
        return self.call.duration

    @property
    def duration_text(self) -> str:
        """m:ss (h:mm:ss past an hour), as the call panel shows it; empty if unanswered."""
        if self.duration is None:
            return ""
        hours, rest = divmod(self.duration, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


def call_views(*, user: User, calls: Any) -> list[CallView]:
    return [CallView(call=call, viewer=user) for call in calls]
