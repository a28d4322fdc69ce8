"""The badge is live: a socket hears of a new notification and of the unread count,
whichever process (the server itself, or a Celery worker) recorded it."""

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from messaging.tests.support import connect, envelope
from notifications.tests.support import direct, person

pytestmark = pytest.mark.django_db(transaction=True)


async def next_of(socket: WebsocketCommunicator, kind: str, within: float = 20) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            event: dict[str, Any] = await socket.receive_json_from(timeout=within)
            if event["type"] == kind:
                return event


async def test_a_message_updates_the_recipients_badge_live() -> None:
    alice, bob = await sync_to_async(person)("alice"), await sync_to_async(person)("bob")
    conversation_id = await sync_to_async(direct)(alice, bob)
    socket = await connect(bob.phones[0], notifications=True)
    for _ in range(2):
        body, _ = await sync_to_async(envelope)(
            sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
        )
        response = await sync_to_async(alice.phones[0].api.post)(
            f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
        )
        assert response.status_code == 201
        notification = (await next_of(socket, "notification"))["notification"]
        assert (await next_of(socket, "notifications.unread"))["count"] == 1
    assert notification["title"] == "New messages from @alice"
    assert notification["count"] == 2
    # A socket that opens now (a reconnect) learns the count from its hello.
    later = WebsocketCommunicator(
        application,
        f"/ws/?device={bob.phones[0].device.pk}",
        headers=[(b"authorization", f"Bearer {bob.phones[0].key}".encode())],
    )
    assert (await later.connect())[0]
    assert (await later.receive_json_from())["notifications_unread"] == 1
    await later.disconnect()
    response = await sync_to_async(bob.phones[0].api.post)(
        "/api/v1/notifications/read", {"all": True}, format="json"
    )
    assert response.json() == {"unread": 0}
    assert (await next_of(socket, "notifications.unread"))["count"] == 0
    await socket.disconnect()
