"""The one WebSocket per device, at /ws/?device=<device_id> (docs/realtime.md).

Thin: it authenticates, joins its groups, turns frames into handler calls and
group messages into frames. It never lets a bad frame close the connection.
"""

import asyncio
import contextlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.utils import timezone

from accounts.models import ApiToken, Device, User
from common.api import error_body
from common.errors import (
    RETRY_UNAVAILABLE_SECONDS,
    SERVICE_UNAVAILABLE_ERRORS,
    UNAVAILABLE_MESSAGE,
    ApplicationError,
)
from moderation.selectors import warning_fields, warnings_for
from notifications.selectors import unread_count
from realtime import interruptions, presence
from realtime.auth import SocketIdentity
from realtime.groups import device_group, session_group, token_group, user_group
from realtime.publish import (
    CLOSE_BAD_REQUEST,
    CLOSE_DEVICE_REVOKED,
    CLOSE_LOGGED_OUT,
    CLOSE_RECONNECT,
    CLOSE_SUSPENDED,
    CLOSE_UNKNOWN_DEVICE,
)
from realtime.registry import SocketContext, handler_for

HELLO_WARNINGS = 5  # as many as the site's banner shows at once

logger = logging.getLogger(__name__)

FRAMES_PER_SECOND = 20
FRAME_BURST = 60

# Their own pool, not the event loop's default one, which presence updates and
# Redis's name lookups need even while every frame thread waits (on a row lock, or
# on publishing through the event loop).
_frame_threads = ThreadPoolExecutor(
    max_workers=settings.REALTIME_FRAME_THREADS, thread_name_prefix="socket-frames"
)


def error_event(
    code: str, message: str, field: str | None = None, ref: Any = None, **extra: Any
) -> dict[str, Any]:
    """The API's error shape, as a socket event."""
    event: dict[str, Any] = {"type": "error", **error_body(code, message, field, **extra)}
    if ref is not None:
        event["ref"] = ref
    return event


def _session_store(session_key: str) -> SessionBase:
    store: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    return store


@database_sync_to_async
def _still_allowed(
    identity: SocketIdentity, user: User, device_id: uuid.UUID
) -> tuple[int, str, str] | None:
    """None if the socket may open (or stay open); else the close code, reason and
    message. Checked before joining the groups and again after."""
    account = User.objects.filter(pk=user.pk).values("is_active", "suspended_until").first()
    if account is None or not account["is_active"]:
        return CLOSE_SUSPENDED, "account_banned", "This account has been banned."
    if account["suspended_until"] and account["suspended_until"] > timezone.now():
        return CLOSE_SUSPENDED, "account_suspended", "This account is suspended."
    revoked_at = Device.objects.filter(pk=device_id, user=user).values_list("revoked_at", flat=True)
    if not revoked_at:
        return CLOSE_UNKNOWN_DEVICE, "device_unknown", "That is not a device of yours."
    if revoked_at[0] is not None:
        return CLOSE_DEVICE_REVOKED, "device_revoked", "That device was revoked."
    if (
        identity.token_id is not None
        and not ApiToken.objects.filter(pk=identity.token_id, revoked_at__isnull=True).exists()
    ):
        return CLOSE_LOGGED_OUT, "token_revoked", "That token was revoked."
    if identity.session_key and not _session_store(identity.session_key).load():
        return CLOSE_LOGGED_OUT, "logged_out", "That session has ended."
    return None


def _open_warnings(user: User) -> list[dict[str, Any]]:
    return [
        warning_fields(warning)
        for warning in warnings_for(user=user, unacknowledged_only=True)[:HELLO_WARNINGS]
    ]


async def _presence(action: Any, user_id: uuid.UUID, socket_id: str) -> None:
    """Presence is best effort: a Redis hiccup must not close anyone's socket."""
    try:
        await sync_to_async(action, thread_sensitive=False)(user_id, socket_id)
    except Exception:
        logger.warning("presence update failed", exc_info=True)


class DeviceSocketConsumer(AsyncWebsocketConsumer):
    ctx: SocketContext | None = None
    joined: list[str]
    _presence_task: "asyncio.Task[None] | None" = None
    _refreshing: "asyncio.Future[None] | None" = None

    async def connect(self) -> None:
        self.joined = []
        self._allowance = float(FRAME_BURST)
        self._last_frame = time.monotonic()
        # Accept first, so a refusal reaches the client as an error event and a close
        # code it can act on, instead of a bare HTTP 403.
        await self.accept()
        identity: SocketIdentity = self.scope["parley_identity"]
        if identity.user is None:
            await self._refuse(
                identity.failure_code or 4001, "unauthenticated", identity.failure or ""
            )
            return
        user = identity.user
        device_id = self._requested_device()
        if device_id is None:
            await self._refuse(
                CLOSE_BAD_REQUEST, "device_required", "Name your device: /ws/?device=<id>."
            )
            return
        if identity.token_device_id is not None and identity.token_device_id != device_id:
            await self._refuse(
                CLOSE_UNKNOWN_DEVICE, "device_mismatch", "This token belongs to another device."
            )
            return
        problem = await _still_allowed(identity, user, device_id)
        if problem is not None:
            await self._refuse(*problem)
            return

        groups = [user_group(user.pk), device_group(device_id)]
        if identity.token_id is not None:
            groups.append(token_group(identity.token_id))
        if identity.session_key:
            groups.append(session_group(identity.session_key))
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.append(group)
        interruptions.watch(self.channel_layer, self)
        # A revocation, sign-out or suspension between our checks and joining the groups
        # went to groups we were not in yet: look again, now that any later one reaches us.
        problem = await _still_allowed(identity, user, device_id)
        if problem is not None:
            await self._refuse(*problem)
            return
        self.ctx = SocketContext(user=user, device_id=device_id, token_id=identity.token_id)
        await _presence(presence.socket_open, user.pk, self.channel_name)
        self._presence_task = asyncio.create_task(self._keep_present(user.pk))
        unread = await database_sync_to_async(unread_count)(user=user)
        warnings = await database_sync_to_async(_open_warnings)(user)
        await self._send_event(
            {
                "type": "hello", "user_id": str(user.pk), "device_id": str(device_id),
                # The badge as of now: a client that reconnects needs no request for it.
                "notifications_unread": unread,
                # Warnings not yet acknowledged: one given while the client was away
                # shows at once, again with no request.
                "account_warnings": warnings,
            }
        )  # fmt: skip

    async def _keep_present(self, user_id: uuid.UUID) -> None:
        while True:
            await asyncio.sleep(settings.PRESENCE_TTL_SECONDS / 3)
            # Its own task: cancelling this loop must not leave a refresh running in its
            # thread that lands after the socket unregistered (online for a whole TTL).
            self._refreshing = asyncio.ensure_future(
                _presence(presence.socket_open, user_id, self.channel_name)
            )
            await asyncio.shield(self._refreshing)

    async def _leave_presence(self) -> None:
        task, self._presence_task = self._presence_task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._refreshing is not None:
            await self._refreshing  # never raises: _presence logs its failures
        if self.ctx is not None:
            await _presence(presence.socket_closed, self.ctx.user.pk, self.channel_name)

    async def disconnect(self, code: int) -> None:
        interruptions.unwatch(self)
        await self._leave_presence()
        for group in self.joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = []
        self.ctx = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch first closes stale database connections, with a hop to
        the process's one thread-sensitive thread, for every frame and every event: all
        deliveries of a process queued on that thread. This consumer reaches the
        database only through ``database_sync_to_async``, which closes them itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- Frames from the client ------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.ctx is None:
            return
        if not self._take_allowance():
            await self._send_event(error_event("rate_limited", "Too many frames; slow down."))
            return
        if text_data is None:
            await self._send_event(error_event("invalid_frame", "Frames are JSON text."))
            return
        # Characters can be up to 4 bytes each: only encode when it could matter.
        limit = settings.REALTIME_MAX_FRAME_BYTES
        if len(text_data) > limit // 4 and len(text_data.encode()) > limit:
            await self._send_event(error_event("frame_too_large", "That frame is too large."))
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            await self._send_event(error_event("invalid_json", "That frame is not valid JSON."))
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._send_event(
                error_event(
                    "invalid_frame", "A frame is a JSON object with a string type.", field="type"
                )
            )
            return
        ref = frame.get("id") if isinstance(frame.get("id"), str | int) else None
        handler = handler_for(frame["type"])
        if handler is None:
            await self._send_event(
                error_event(
                    "unknown_type",
                    f"Unknown frame type {frame['type'][:40]!r}.",
                    field="type",
                    ref=ref,
                )
            )
            return
        try:
            # Not thread-sensitive: frames of different sockets run on the pool's threads,
            # each with its own connection, so one socket's commit does not queue every
            # other socket of this process behind it (docs/performance.md). A socket's own
            # frames still run one after another.
            reply = await database_sync_to_async(
                handler, thread_sensitive=False, executor=_frame_threads
            )(self.ctx, frame)
        except ApplicationError as exc:
            await self._send_event(
                error_event(exc.code, exc.message, exc.field, ref=ref, **exc.extra)
            )
            return
        except SERVICE_UNAVAILABLE_ERRORS as exc:
            logger.warning("socket handler for %s: %s", frame["type"][:40], type(exc).__name__)
            await self._send_event(
                error_event(
                    "unavailable", UNAVAILABLE_MESSAGE, ref=ref,
                    retry_after=RETRY_UNAVAILABLE_SECONDS,
                )
            )  # fmt: skip
            return
        except Exception:
            # Log the type only: the frame may hold data that must not reach logs.
            logger.exception("socket handler for %s failed", frame["type"][:40])
            await self._send_event(error_event("server_error", "Something went wrong.", ref=ref))
            return
        if reply is not None:
            if ref is not None:
                reply = {**reply, "ref": ref}
            await self._send_event(reply)

    def _take_allowance(self) -> bool:
        now = time.monotonic()
        self._allowance = min(
            float(FRAME_BURST), self._allowance + (now - self._last_frame) * FRAMES_PER_SECOND
        )
        self._last_frame = now
        if self._allowance < 1:
            return False
        self._allowance -= 1
        return True

    # --- Messages from the channel layer ---------------------------------------------------

    async def realtime_event(self, message: dict[str, Any]) -> None:
        if self.ctx is None:
            return
        event = dict(message["event"])
        per_device = event.pop("_per_device", None)
        if per_device is not None:
            mine = per_device.get(str(self.ctx.device_id))
            if mine is None:
                return  # not for this device
            event.update(mine)
        await self._send_event(event)

    async def layer_interrupted(self) -> None:
        """The process's link to the channel layer broke and came back: events, a close
        among them, may have been lost meanwhile (realtime/interruptions.py)."""
        if self.ctx is None:
            return
        await self._refuse(
            CLOSE_RECONNECT, "reconnect",
            "Events may have been missed: reconnect, and sync after the hello.",
        )  # fmt: skip

    async def realtime_close(self, message: dict[str, Any]) -> None:
        await self._refuse(
            int(message["code"]), str(message["reason"]), "This connection was closed."
        )

    # --- Helpers ---------------------------------------------------------------------------

    def _requested_device(self) -> uuid.UUID | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        values = query.get("device", [])
        if len(values) != 1:
            return None
        try:
            return uuid.UUID(values[0])
        except ValueError:
            return None

    async def _send_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(event, separators=(",", ":")))

    async def _refuse(self, code: int, reason: str, message: str) -> None:
        await self._send_event(
            {"type": "closing", "code": code, "reason": reason, "message": message}
        )
        await self._leave_presence()
        self.ctx = None
        await self.close(code=code)
