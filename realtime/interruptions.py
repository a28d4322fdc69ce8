"""Sockets of a process whose link to the channel layer broke are closed, to reconnect.

Redis pub/sub keeps nothing for a process while its connection is down: every event
published meanwhile is gone, a sign-out's or a ban's close among them. The process
reconnects and subscribes again by itself, so without this its sockets would stay
open, checked against nothing since they connected, and a device whose last event
was lost would not know to sync. When the connection comes back, each socket of the
process is closed with ``CLOSE_RECONNECT``: the client reconnects, is checked again
at connect, and syncs after the hello (docs/realtime.md).
"""

import asyncio
import weakref
from typing import Any, Protocol


class InterruptibleSocket(Protocol):
    async def layer_interrupted(self) -> None: ...


class _Watcher:
    """One per process. redis-py keeps connect callbacks as weak references to methods,
    hence a long-lived object rather than a function."""

    def __init__(self) -> None:
        self.sockets: weakref.WeakSet[Any] = weakref.WeakSet()
        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.tasks: set[asyncio.Task[None]] = set()

    def reconnected(self, connection: Any) -> None:
        for socket in list(self.sockets):
            task = asyncio.ensure_future(socket.layer_interrupted())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


_watcher = _Watcher()


def watch(layer: Any, socket: InterruptibleSocket) -> None:
    """Close ``socket`` when this process's pub/sub connection to Redis reconnects.

    The connection is reached through channels_redis's pub/sub layer (its per-loop
    layer's shards), the version pinned in requirements; any other layer, in memory
    say, is not watched: it has no connection to lose."""
    get_layer = getattr(layer, "_get_layer", None)
    if get_layer is None:
        return
    _watcher.sockets.add(socket)
    for shard in getattr(get_layer(), "_shards", []):
        connection = getattr(getattr(shard, "_pubsub", None), "connection", None)
        if connection is not None and connection not in _watcher.connections:
            connection.register_connect_callback(_watcher.reconnected)
            _watcher.connections.add(connection)


def unwatch(socket: InterruptibleSocket) -> None:
    _watcher.sockets.discard(socket)
