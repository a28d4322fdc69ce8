"""Presence: online while a socket is open on any process, away otherwise, and away
by itself when a process dies without saying goodbye (docs/notifications.md)."""

import json
import os
import signal
import time
from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from websockets.sync.client import connect as ws_connect

from common.testing import SERVICES_MODE, LiveServer, wait_until
from messaging.tests.support import connect, person
from realtime import presence
from realtime.presence import LocalPresence, RedisPresence

# Redis is only there on the real parts (make test-services).
STORES = ["local", "redis"] if SERVICES_MODE else ["local"]


@pytest.mark.parametrize("kind", STORES)
def test_a_socket_entry_expires_unless_refreshed(kind: str) -> None:
    store = RedisPresence(settings.REDIS_URL) if kind == "redis" else LocalPresence()
    store.register("u1", "socket-a", ttl=0.3)
    store.register("u1", "socket-b", ttl=30)
    assert store.online_among(["u1", "u2"]) == {"u1"}
    store.unregister("u1", "socket-b")
    assert store.online_among(["u1"]) == {"u1"}, "socket-a is still fresh"
    time.sleep(0.4)
    assert store.online_among(["u1"]) == set(), "socket-a was never refreshed"
    store.register("u1", "socket-a", ttl=30)
    assert store.online_among(["u1"]) == {"u1"}
    store.unregister("u1", "socket-a")
    assert store.online_among(["u1"]) == set()


@pytest.mark.django_db(transaction=True)
async def test_a_socket_makes_its_user_online_until_it_closes() -> None:
    alice = await sync_to_async(person)("alice", phones=2)
    assert not presence.is_online(alice.user.pk)
    phone = await connect(alice.phones[0])
    laptop = await connect(alice.phones[1])
    assert presence.is_online(alice.user.pk)
    await phone.disconnect()
    assert presence.is_online(alice.user.pk), "the laptop is still connected"
    await laptop.disconnect()
    assert not presence.is_online(alice.user.pk)


@pytest.mark.skipif(
    not SERVICES_MODE, reason="needs Redis, where every process keeps presence (make test-services)"
)
@pytest.mark.django_db(transaction=True)
def test_presence_holds_across_processes_and_a_crashed_one_expires(
    start_daphne: Callable[..., LiveServer],
) -> None:
    """A socket on a Daphne process makes its user online for this (other) process; when
    that Daphne is killed outright its users turn away after the presence TTL."""
    server = start_daphne(env={"PRESENCE_TTL_SECONDS": "3"})
    bob = person("bob")
    phone = bob.phones[0]
    with ws_connect(
        f"{server.ws_url}/ws/?device={phone.device.pk}",
        additional_headers={"Authorization": f"Bearer {phone.key}"},
        open_timeout=10,
    ) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "hello"
        assert presence.is_online(bob.user.pk)
        time.sleep(4)  # longer than the TTL: the socket's refreshes keep it online
        assert presence.is_online(bob.user.pk)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        wait_until(lambda: not presence.is_online(bob.user.pk), timeout=10,
                   message="the dead process's socket expires")  # fmt: skip
