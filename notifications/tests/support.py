"""People, conversations and messages for the notification tests (real keys and
envelopes from messaging.tests.support; the server never sees a plaintext)."""

from typing import Any

from accounts import services as account_services
from messaging.models import Message
from messaging.tests.support import Person, envelope, person
from notifications import services
from notifications.models import Notification

__all__ = ["Person", "direct", "group", "person", "send"]


def direct(sender: Person, recipient: Person, *, follow: bool = True) -> str:
    """A direct conversation; the recipient follows the sender unless ``follow`` is
    off (then the first message is a request)."""
    if follow:
        account_services.user_follow(follower=recipient.user, followee=sender.user)
    response = sender.phones[0].api.post(
        "/api/v1/conversations", {"kind": "direct", "handle": recipient.user.handle}, format="json"
    )
    assert response.status_code in (200, 201), response.content
    return str(response.json()["id"])


def group(admin: Person, members: list[Person]) -> str:
    for member in members:
        account_services.user_follow(follower=member.user, followee=admin.user)
    response = admin.phones[0].api.post(
        "/api/v1/conversations",
        {"kind": "group", "name": "Climbing", "handles": [m.user.handle for m in members]},
        format="json",
    )
    assert response.status_code == 201, response.content
    return str(response.json()["id"])


def send(
    sender: Person,
    conversation_id: str,
    recipients: list[Person],
    text: str = "hello",
    *,
    count: bool = True,
) -> Message:
    """Send one encrypted message and (``count``) count it into notifications, as the
    task does."""
    body, _ = envelope(
        sender=sender.phones[0], conversation_id=conversation_id,
        recipients=[sender, *recipients],
        payload={"type": "text", "body": text, "sent_at": 1763660000, "reply_to": None,
                 "attachments": []},
    )  # fmt: skip
    response = sender.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 201, response.content
    message = Message.objects.get(pk=response.json()["id"])
    if count:
        services.notify_message(message_id=message.pk)
    return message


def open_notifications(user: Any) -> list[Notification]:
    return list(Notification.objects.filter(user=user, read_at__isnull=True))
