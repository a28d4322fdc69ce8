"""The doors out to sockets. Only services call these, and only after commit.

The channel layer is a doorbell, not a mailbox: it may drop an event, so every
event must be recoverable from the database (``sync``).
"""

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from realtime.groups import device_group, session_group, token_group, user_group

logger = logging.getLogger(__name__)

# Close codes sent to clients (docs/realtime.md).
CLOSE_BAD_REQUEST = 4000
CLOSE_UNAUTHENTICATED = 4001
CLOSE_BAD_ORIGIN = 4003
CLOSE_UNKNOWN_DEVICE = 4004
CLOSE_DEVICE_REVOKED = 4005
CLOSE_LOGGED_OUT = 4006
CLOSE_SUSPENDED = 4007
CLOSE_RECONNECT = 4008  # not final: reconnect, and sync (realtime/interruptions.py)


T = TypeVar("T")

# A process with no event loop of its own (the Celery worker) publishes on one loop of
# its own, in a thread, kept for the process's life: each publish then reuses the
# channel layer's Redis connection instead of opening one on a new loop, which cost
# the worker more than the counting itself (docs/performance.md). Per process id, as
# a prefork worker's children inherit the parent's memory but not its threads.
_own_loop_wanted = False
_own_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_own_loop_lock = threading.Lock()
PUBLISH_TIMEOUT_SECONDS = 10


def publish_from_own_loop() -> None:
    """Called once by a process that runs no event loop (the worker, at start)."""
    global _own_loop_wanted
    _own_loop_wanted = True


def _loop_of_this_process() -> asyncio.AbstractEventLoop:
    global _own_loop
    with _own_loop_lock:
        if _own_loop is None or _own_loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="channel-layer", daemon=True).start()
            _own_loop = (os.getpid(), loop)
        return _own_loop[1]


def _run(work: Callable[[], Awaitable[T]]) -> T:
    async def call() -> T:
        return await work()

    if not _own_loop_wanted:
        # In the server, this goes back to its event loop; elsewhere, a new loop per call.
        return async_to_sync(call)()
    future = asyncio.run_coroutine_threadsafe(call(), _loop_of_this_process())
    try:
        return future.result(timeout=PUBLISH_TIMEOUT_SECONDS)
    except TimeoutError:
        future.cancel()  # not left queued behind a hung Redis, to go out late
        raise


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        _run(lambda: layer.group_send(group, message))
    except Exception:
        # Delivery is best effort: the database already holds the truth.
        logger.exception("channel layer send to %s failed", group.split(".", 1)[0])


def publish_now(*, user_ids: Iterable[Any], event: dict[str, Any]) -> None:
    """Send ``event`` to every socket of these users.

    An event may carry ``_per_device``: ``{device_id: {extra fields}}``; each socket
    merges only its own device's entry and the map never reaches a client.
    """
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "realtime.event", "event": event}
    groups = [user_group(user_id) for user_id in set(user_ids)]
    if not groups:
        return

    async def send_all() -> list[BaseException | None]:
        # Concurrently, in one hop to the event loop: one hop per group cost more than
        # the sends themselves (docs/performance.md).
        return await asyncio.gather(
            *(layer.group_send(group, message) for group in groups), return_exceptions=True
        )

    try:
        outcomes = _run(send_all)
    except Exception:
        logger.exception("channel layer send failed")
        return
    for group, outcome in zip(groups, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            # Delivery is best effort: the database already holds the truth.
            logger.error(
                "channel layer send to %s failed", group.split(".", 1)[0], exc_info=outcome
            )


def publish_on_commit(*, user_ids: Iterable[Any], event: dict[str, Any]) -> None:
    targets = list(user_ids)
    transaction.on_commit(lambda: publish_now(user_ids=targets, event=event))


def publish_to_device_on_commit(*, device_id: Any, event: dict[str, Any]) -> None:
    transaction.on_commit(
        lambda: _group_send(device_group(device_id), {"type": "realtime.event", "event": event})
    )


def close_sockets_on_commit(
    *,
    code: int,
    reason: str,
    user_id: Any = None,
    device_id: Any = None,
    token_id: int | None = None,
    session_key: str | None = None,
) -> None:
    """Close the matching open sockets on every process, once the transaction commits."""
    if user_id is not None:
        group = user_group(user_id)
    elif device_id is not None:
        group = device_group(device_id)
    elif token_id is not None:
        group = token_group(token_id)
    elif session_key is not None:
        group = session_group(session_key)
    else:
        raise ValueError("close_sockets_on_commit needs a target")
    message = {"type": "realtime.close", "code": code, "reason": reason}
    transaction.on_commit(lambda: _group_send(group, message))
