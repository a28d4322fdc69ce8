"""Frames the socket itself handles (docs/realtime.md)."""

from accounts.services import device_touch
from realtime.registry import Frame, SocketContext, register


@register("ping")
def ping(ctx: SocketContext, frame: Frame) -> Frame:
    """Heartbeat: answers ``pong`` and notes the device as seen."""
    device_touch(device_id=ctx.device_id)
    return {"type": "pong"}
