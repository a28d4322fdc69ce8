"""Apps register the socket frames they handle here, from their ``events.py``.

A handler is a plain function run in a worker thread (it may use the ORM):
``handler(ctx, frame) -> reply | None``. It parses the frame, calls one service and
returns the event to send back to this socket, if any. It raises ApplicationError
to refuse; the socket turns that into an ``error`` event and stays open.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from accounts.models import User


@dataclass(frozen=True)
class SocketContext:
    user: User
    device_id: uuid.UUID
    token_id: int | None


Frame = dict[str, Any]
Handler = Callable[[SocketContext, Frame], Frame | None]

_handlers: dict[str, Handler] = {}


def register(frame_type: str) -> Callable[[Handler], Handler]:
    """Decorator: ``@register("message.send")`` on a handler in an app's events.py."""

    def decorator(handler: Handler) -> Handler:
        if frame_type in _handlers and _handlers[frame_type] is not handler:
            raise RuntimeError(f"a handler for {frame_type!r} is already registered")
        _handlers[frame_type] = handler
        return handler

    return decorator


def handler_for(frame_type: str) -> Handler | None:
    return _handlers.get(frame_type)


def registered_types() -> list[str]:
    return sorted(_handlers)
