"""Reads of the notifications app (docs/notifications.md)."""

from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse

from accounts.models import User
from notifications.models import Channel, Kind, Notification, Preference

Kinds = Preference.PreferenceKind

# (kind, label, channels): the rows of the preferences table, in order.
PREFERENCE_ROWS: list[tuple[str, str, tuple[str, ...]]] = [
    (Kinds.MESSAGE, Kinds.MESSAGE.label, (Channel.EMAIL, Channel.PUSH)),
    (Kinds.MESSAGE_REQUEST, Kinds.MESSAGE_REQUEST.label, (Channel.EMAIL, Channel.PUSH)),
    (Kinds.MISSED_CALL, Kinds.MISSED_CALL.label, (Channel.EMAIL, Channel.PUSH)),
    (Kinds.NEW_FOLLOWER, Kinds.NEW_FOLLOWER.label, (Channel.EMAIL, Channel.PUSH)),
    (Kinds.DIGEST, Kinds.DIGEST.label, (Channel.EMAIL,)),
]

# What a user gets before choosing: pushes for everything; email for what a person
# would not want to miss, and the digest of what stays unread.
DEFAULT_PREFERENCES: dict[tuple[str, str], bool] = {
    (Kinds.MESSAGE, Channel.EMAIL): True,
    (Kinds.MESSAGE, Channel.PUSH): True,
    (Kinds.MESSAGE_REQUEST, Channel.EMAIL): True,
    (Kinds.MESSAGE_REQUEST, Channel.PUSH): True,
    (Kinds.MISSED_CALL, Channel.EMAIL): True,
    (Kinds.MISSED_CALL, Channel.PUSH): True,
    (Kinds.NEW_FOLLOWER, Channel.EMAIL): False,
    (Kinds.NEW_FOLLOWER, Channel.PUSH): True,
    (Kinds.DIGEST, Channel.EMAIL): True,
}


def preferences_for(*, user: User) -> dict[str, dict[str, bool]]:
    """``{kind: {channel: enabled}}``, defaults filled in."""
    chosen = {
        (kind, channel): enabled
        for kind, channel, enabled in Preference.objects.filter(user=user).values_list(
            "kind", "channel", "enabled"
        )
    }
    return {
        kind: {
            channel: chosen.get((kind, channel), DEFAULT_PREFERENCES[(kind, channel)])
            for channel in channels
        }
        for kind, _label, channels in PREFERENCE_ROWS
    }


def wants(*, user: User, kind: str, channel: str) -> bool:
    enabled = (
        Preference.objects.filter(user=user, kind=kind, channel=channel)
        .values_list("enabled", flat=True)
        .first()
    )
    return DEFAULT_PREFERENCES[(kind, channel)] if enabled is None else enabled


def notifications_for(*, user: User, unread_only: bool = False) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(user=user).select_related("actor", "conversation")
    if unread_only:
        notifications = notifications.filter(read_at__isnull=True)
    return notifications.order_by("-updated_at", "-created_at")


def unread_count(*, user: User | Any) -> int:
    return Notification.objects.filter(user=user, read_at__isnull=True).count()


@dataclass(frozen=True)
class Description:
    """What a notification says, the same in the centre, an email and a push."""

    title: str
    body: str
    url: str  # site-relative


def _who(actor: User | None) -> str:
    return f"@{actor.handle}" if actor is not None else "someone"


def describe(notification: Notification) -> Description:
    """Who did what, and where to look: never what was said (the server cannot read
    messages; nothing here may come from one)."""
    kind = notification.kind
    who = _who(notification.actor)
    count = notification.count
    if kind in (Kind.MESSAGE, Kind.MESSAGE_REQUEST):
        url = reverse("messaging:conversation", args=[notification.conversation_id])
        conversation = notification.conversation
        group = (
            conversation.name if conversation is not None and conversation.kind == "group" else ""
        )
        many = f"{count} new messages" if count > 1 else "A new message"
        if kind == Kind.MESSAGE_REQUEST:
            title = f"Message request from {who}"
            body = f"{many} from {who}, who you do not follow yet."
        elif group:
            title = f"New messages in {group}" if count > 1 else f"New message in {group}"
            body = f"{many} in {group}, the latest from {who}."
        else:
            title = f"New messages from {who}" if count > 1 else f"New message from {who}"
            body = f"{many} from {who}."
        return Description(title=title, body=body, url=url)
    if kind == Kind.MISSED_CALL:
        url = reverse("calls:history")
        return Description(title=f"Missed call from {who}", body=f"{who} called you.", url=url)
    url = (
        reverse("accounts:profile", args=[notification.actor.handle])
        if notification.actor is not None
        else reverse("home")
    )
    return Description(title=f"{who} follows you", body=f"{who} started following you.", url=url)


def notification_fields(notification: Notification) -> dict[str, Any]:
    """A notification as the API and the socket show it."""
    description = describe(notification)
    actor = notification.actor
    return {
        "id": str(notification.pk),
        "kind": notification.kind,
        "title": description.title,
        "body": description.body,
        "url": description.url,
        "count": notification.count,
        "read": notification.is_read,
        "actor": (
            {"id": str(actor.pk), "handle": actor.handle, "display_name": actor.display_name}
            if actor is not None
            else None
        ),
        "conversation_id": str(notification.conversation_id)
        if notification.conversation_id
        else None,
        "call_id": str(notification.call_id) if notification.call_id else None,
        "created_at": notification.created_at.isoformat(),
        "updated_at": notification.updated_at.isoformat(),
    }
