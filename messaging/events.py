"""Socket frames of the messaging app (docs/realtime.md, docs/messages.md).

message.send, message.ack, message.read and typing do over the socket what the API
does over HTTP, through the same services.
"""

import uuid
from typing import Any

from rest_framework.exceptions import ValidationError

from accounts.models import Device
from common.api import first_error
from common.errors import ApplicationError
from messaging import services
from messaging.serializers import EnvelopeSerializer
from realtime.registry import Frame, SocketContext, register


def _conversation_id(frame: Frame) -> uuid.UUID:
    try:
        return uuid.UUID(str(frame["conversation_id"]))
    except (KeyError, ValueError) as exc:
        raise ApplicationError(
            "invalid", "conversation_id must be an id.", field="conversation_id"
        ) from exc


def _seq(frame: Frame) -> int:
    seq = frame.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**62:
        raise ApplicationError("invalid", "seq must be a whole number.", field="seq")
    return seq


def _validation_error(errors: Any) -> ApplicationError:
    field, message, code = first_error(ValidationError(errors).detail)
    return ApplicationError(code, message, field=f"envelope.{field}" if field else "envelope")


@register("message.send")
def send(ctx: SocketContext, frame: Frame) -> Frame:
    """``{"type": "message.send", "conversation_id": ..., "envelope": {...}}`` answers
    ``message.sent`` with the stored message's id, seq, server_ts and franking stamp."""
    conversation_id = _conversation_id(frame)
    envelope = EnvelopeSerializer(data=frame.get("envelope"))
    if not envelope.is_valid():
        raise _validation_error(envelope.errors)
    # The socket's device was checked against its token when it connected: sending from
    # that device is all the binding needs, so no token lookup per message.
    if str(envelope.validated_data["sender_device"]) != str(ctx.device_id):
        raise ApplicationError(
            "wrong_device", "Send from the device of this socket.", field="envelope.sender_device"
        )
    message, created = services.message_send(
        sender=ctx.user,
        conversation_id=conversation_id,
        envelope=envelope.to_envelope(),
    )
    return {"type": "message.sent", "created": created, **services.message_fields(message)}


@register("message.ack")
def ack(ctx: SocketContext, frame: Frame) -> Frame:
    """Delivered to this device up to ``seq``."""
    device = Device.objects.select_related("user").get(pk=ctx.device_id)
    seq = services.delivery_ack(
        device=device, conversation_id=_conversation_id(frame), seq=_seq(frame)
    )
    return {"type": "message.acked", "conversation_id": str(frame["conversation_id"]), "seq": seq}


@register("message.read")
def read(ctx: SocketContext, frame: Frame) -> Frame:
    """Read by this user up to ``seq``."""
    seq = services.read_mark(
        user=ctx.user, conversation_id=_conversation_id(frame), seq=_seq(frame)
    )
    return {
        "type": "message.read_marked",
        "conversation_id": str(frame["conversation_id"]),
        "seq": seq,
    }


@register("typing")
def typing(ctx: SocketContext, frame: Frame) -> None:
    """The user is typing: the other members get ``typing``; nothing is stored."""
    services.typing_notify(user=ctx.user, conversation_id=_conversation_id(frame))
    return None
