"""Who has a socket open, across every Daphne process (docs/notifications.md, "Presence").

A user is *online* while at least one of their sockets is registered and fresh, and
*away* otherwise. Each socket registers itself on connect, refreshes its entry every
``PRESENCE_TTL_SECONDS / 3`` and removes it on disconnect. An entry that is not
refreshed expires by itself, so a process that crashes does not leave its users
online. With ``REDIS_URL`` the entries live in Redis (one sorted set per user, the
score being the entry's expiry time); the embedded default keeps them in this
process, which is then the only one.
"""

import threading
import time
from collections.abc import Iterable
from functools import cache
from typing import Any, Protocol

import redis
from django.conf import settings

KEY_PREFIX = "parley:presence:"


class PresenceStore(Protocol):
    def register(self, user_id: str, socket_id: str, ttl: float) -> None: ...

    def unregister(self, user_id: str, socket_id: str) -> None: ...

    def online_among(self, user_ids: Iterable[str]) -> set[str]: ...


class RedisPresence:
    def __init__(self, url: str) -> None:
        # Short timeouts: presence must never hold up a socket or a task for long.
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def register(self, user_id: str, socket_id: str, ttl: float) -> None:
        now = time.time()
        key = KEY_PREFIX + user_id
        with self.client.pipeline() as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {socket_id: now + ttl})
            pipe.expire(key, int(ttl) + 1)
            pipe.execute()

    def unregister(self, user_id: str, socket_id: str) -> None:
        self.client.zrem(KEY_PREFIX + user_id, socket_id)

    def online_among(self, user_ids: Iterable[str]) -> set[str]:
        ids = list(user_ids)
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for user_id in ids:
                pipe.zcount(KEY_PREFIX + user_id, f"({now}", "+inf")
            counts: list[Any] = pipe.execute()
        return {user_id for user_id, count in zip(ids, counts, strict=True) if count}


class LocalPresence:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, dict[str, float]] = {}

    def register(self, user_id: str, socket_id: str, ttl: float) -> None:
        with self._lock:
            self._expiry.setdefault(user_id, {})[socket_id] = time.time() + ttl

    def unregister(self, user_id: str, socket_id: str) -> None:
        with self._lock:
            sockets = self._expiry.get(user_id, {})
            sockets.pop(socket_id, None)
            if not sockets:
                self._expiry.pop(user_id, None)

    def online_among(self, user_ids: Iterable[str]) -> set[str]:
        now = time.time()
        with self._lock:
            return {
                user_id
                for user_id in user_ids
                if any(expiry > now for expiry in self._expiry.get(user_id, {}).values())
            }


@cache
def _store(redis_url: str) -> PresenceStore:
    return RedisPresence(redis_url) if redis_url else LocalPresence()


def store() -> PresenceStore:
    return _store(settings.REDIS_URL)


def socket_open(user_id: Any, socket_id: str) -> None:
    """Register (or refresh) one open socket of the user."""
    store().register(str(user_id), socket_id, settings.PRESENCE_TTL_SECONDS)


def socket_closed(user_id: Any, socket_id: str) -> None:
    store().unregister(str(user_id), socket_id)


def is_online(user_id: Any) -> bool:
    return bool(store().online_among([str(user_id)]))
