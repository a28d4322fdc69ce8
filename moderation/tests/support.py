"""Moderators, staff admins and reported messages for the panel's tests, made as
people make them: through the services and the API, with real keys."""

from typing import Any

from django.test import Client

from accounts.models import User
from accounts.tests.factories import make_user
from messaging.models import Message, Report
from messaging.tests.support import Person, envelope, person
from moderation import services
from moderation.roles import MODERATORS, STAFF_ADMINS
from notifications.tests.support import direct

__all__ = ["MODERATORS", "STAFF_ADMINS", "Person", "person"]


def staff(role: str, handle: str | None = None) -> User:
    """A user given ``role`` by the setup command's path (audited as setup)."""
    user = make_user(handle)
    services.role_grant(granter=None, user_id=user.pk, role=role, reason="joined the team")
    user.refresh_from_db()
    return user


def panel(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def send_text(
    sender: Person, conversation_id: str, recipients: list[Person], text: str
) -> tuple[Message, dict[str, Any]]:
    """One encrypted message; returns it with its secrets (payload bytes, K, FK)."""
    body, secrets = envelope(
        sender=sender.phones[0], conversation_id=conversation_id,
        recipients=[sender, *recipients],
        payload={"type": "text", "body": text, "sent_at": 1763660000, "reply_to": None,
                 "attachments": []},
    )  # fmt: skip
    response = sender.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 201, response.content
    return Message.objects.get(pk=response.json()["id"]), secrets


def report_message(
    reporter: Person, message: Message, secrets: dict[str, Any], reason: str = "harassment"
) -> Report:
    """What a recipient's client does: disclose the payload and FK with the report."""
    from common.encoding import b64u_encode

    response = reporter.phones[0].api.post(
        "/api/v1/reports",
        {
            "message_id": str(message.pk),
            "payload": b64u_encode(secrets["payload"]),
            "franking_key": b64u_encode(secrets["fk"]),
            "reason": reason,
            "comment": "please look",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return Report.objects.get(pk=response.json()["id"])


def reported_conversation(texts: list[str], reported: int) -> tuple[Person, Person, Report]:
    """Alice writes ``texts`` to Bob; Bob reports the one at index ``reported``."""
    alice, bob = person(), person()
    conversation_id = direct(alice, bob)
    sent = [send_text(alice, conversation_id, [bob], text) for text in texts]
    message, secrets = sent[reported]
    return alice, bob, report_message(bob, message, secrets)
