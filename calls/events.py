"""Socket frames of the calls app (docs/calls.md, "Frames").

Each handler parses its frame with a serializer and calls one service. The boxed
offers, answers and candidates pass through unopened.
"""

from collections.abc import Callable
from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from calls import serializers as shapes
from calls import services
from calls.models import Call
from common.api import first_error
from common.errors import ApplicationError
from realtime.registry import Frame, SocketContext, register


def _parse(serializer_class: type[serializers.Serializer], frame: Frame) -> dict[str, Any]:
    parsed = serializer_class(data=frame)
    if not parsed.is_valid():
        field, message, code = first_error(ValidationError(parsed.errors).detail)
        raise ApplicationError(code, message, field=field)
    data: dict[str, Any] = parsed.validated_data
    return data


def _ended(call: Call) -> Frame:
    return services.ended_event(call)


@register("call.prepare")
def prepare(ctx: SocketContext, frame: Frame) -> Frame:
    """Before the offer: may I call them, and with which ICE servers?"""
    data = _parse(shapes.PrepareSerializer, frame)
    prepared = services.call_prepare(
        caller=ctx.user, callee_handle=data["callee"], media=data["media"]
    )
    return {
        "type": "call.prepared",
        "callee": {
            "id": str(prepared.callee.pk),
            "handle": prepared.callee.handle,
            "name": prepared.callee.name,
        },
        "media": data["media"],
        "ice_servers": prepared.ice_servers,
        "relay_only": prepared.relay_only,
    }


@register("call.invite")
def invite(ctx: SocketContext, frame: Frame) -> Frame:
    """Ring the callee's devices; ``call.ringing``, or ``call.ended`` when the callee
    is busy or the other side's call won the glare."""
    data = _parse(shapes.InviteSerializer, frame)
    call = services.call_invite(
        caller=ctx.user, caller_device_id=ctx.device_id, call_id=data["call_id"],
        callee_handle=data["callee"], media=data["media"], offers=data["offers"],
    )  # fmt: skip
    if call.state != Call.State.RINGING:
        return _ended(call)
    return {
        "type": "call.ringing",
        "call_id": str(call.pk),
        "ring_deadline": call.ring_deadline.isoformat(),
    }


@register("call.accept")
def accept(ctx: SocketContext, frame: Frame) -> Frame:
    data = _parse(shapes.AcceptSerializer, frame)
    answer = frame["answer"]  # checked above; relayed as the client wrote it
    call = services.call_accept(
        user=ctx.user, device_id=ctx.device_id, call_id=data["call_id"], answer=answer
    )
    return {"type": "call.accepted", "call_id": str(call.pk)}


@register("call.candidate")
def candidate(ctx: SocketContext, frame: Frame) -> None:
    data = _parse(shapes.CandidateSerializer, frame)
    services.call_relay_candidate(
        user=ctx.user, device_id=ctx.device_id, call_id=data["call_id"],
        candidate=frame["candidate"],
    )  # fmt: skip
    return None


# Frames that only name the call, each answered with the call as it ended.
_ENDINGS = {
    "call.decline": services.call_decline,
    "call.busy": services.call_busy,
    "call.cancel": services.call_cancel,
}


def _ending(end: Callable[..., Call]) -> Callable[[SocketContext, Frame], Frame]:
    def handler(ctx: SocketContext, frame: Frame) -> Frame:
        data = _parse(shapes.CallIdSerializer, frame)
        return _ended(end(user=ctx.user, device_id=ctx.device_id, call_id=data["call_id"]))

    return handler


for _kind, _end in _ENDINGS.items():
    register(_kind)(_ending(_end))


@register("call.hangup")
def hangup(ctx: SocketContext, frame: Frame) -> Frame:
    data = _parse(shapes.HangupSerializer, frame)
    return _ended(
        services.call_hangup(
            user=ctx.user, device_id=ctx.device_id, call_id=data["call_id"],
            reason=data["reason"],
        )
    )  # fmt: skip
