"""Sending on the outside channels: email (Django's mail backend) and Web Push
(pywebpush: RFC 8291 encryption, RFC 8292 VAPID). No database writes here; the
services decide what to send and record what happened.
"""

import json
import re
import smtplib
from collections.abc import Sequence
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.template.loader import render_to_string
from py_vapid import Vapid02
from pywebpush import WebPushException, webpush
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from accounts.models import User
from notifications.models import Notification, PushSubscription
from notifications.selectors import Description, describe

# A push waits at the push service this long for a browser that is offline.
PUSH_TTL_SECONDS = 24 * 3600


class TransientFailure(Exception):
    """May pass: try again later."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail[:40]


class PermanentFailure(TransientFailure):
    """Will not pass by trying again (a refused request)."""


class SubscriptionGone(Exception):
    """The push service no longer knows the subscription (404, 410)."""


def _absolute(url: str) -> str:
    return settings.SITE_URL + url


def send_notification_email(notification: Notification, *, message_id: str) -> None:
    """Raises ``TransientFailure`` when the mail server cannot take it now."""
    description = describe(notification)
    _send_email(
        to=notification.user.email,
        subject=f"{description.title} on Parley",
        template="notifications/email/notification.txt",
        context={
            "user": notification.user,
            "description": description,
            "link": _absolute(description.url),
        },
        message_id=message_id,
    )


def send_digest_email(
    user: User, notifications: Sequence[Notification], *, message_id: str
) -> None:
    descriptions: list[Description] = [describe(notification) for notification in notifications]
    _send_email(
        to=user.email,
        subject="What you missed on Parley",
        template="notifications/email/digest.txt",
        context={
            "user": user,
            "items": [(item, _absolute(item.url)) for item in descriptions],
            "link": _absolute("/notifications"),
            "settings_link": _absolute("/settings/notifications"),
        },
        message_id=message_id,
    )


def _send_email(*, to: str, subject: str, template: str, context: dict[str, object],
                message_id: str) -> None:  # fmt: skip
    body = render_to_string(template, {**context, "site_url": settings.SITE_URL})
    # The Message-ID is the delivery's: a mail server or client can tell a resend.
    email = EmailMessage(subject=subject, body=body, to=[to], headers={"Message-ID": message_id})
    try:
        email.send()
    except (smtplib.SMTPException, OSError) as exc:
        raise TransientFailure(type(exc).__name__) from exc


def push_payload(notification: Notification) -> str:
    """What the service worker shows: the same words as the notification centre."""
    description = describe(notification)
    tag = (
        f"conversation-{notification.conversation_id}"
        if notification.conversation_id
        else f"notification-{notification.pk}"
    )
    return json.dumps(
        {"title": description.title, "body": description.body, "url": description.url,
         "tag": tag, "count": notification.count, "kind": notification.kind},
        separators=(",", ":"),
    )  # fmt: skip


_HOST = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


def push_endpoint_allowed(endpoint: str) -> bool:
    """Only the push services' own hosts, over HTTPS: the server posts to whatever
    endpoint a browser names, which must not be a way into our own network."""
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018  (raises on a malformed port)
    except ValueError:
        return False
    if parts.scheme != "https" and not (settings.WEB_PUSH_ALLOW_HTTP and parts.scheme == "http"):
        return False
    if parts.username or parts.password or not _HOST.fullmatch(host):
        return False
    # The host as requests (urllib3) will read it must be the one checked: parsers
    # disagree on odd URLs (a backslash, say), and the odd URL is the attack.
    try:
        if (parse_url(endpoint).host or "").lower().rstrip(".") != host:
            return False
    except LocationParseError:
        return False
    return any(
        host == allowed or host.endswith("." + allowed) for allowed in settings.WEB_PUSH_HOSTS
    )


def _push_session() -> requests.Session:
    session = requests.Session()
    # A push service answers; it does not send us elsewhere (an allowed host must not
    # become a way to reach any other).
    session.max_redirects = 0
    return session


def send_web_push(notification: Notification, subscription: PushSubscription) -> None:
    """Encrypted for the browser (aes128gcm, RFC 8291) and signed for the push service
    (VAPID, RFC 8292). Raises ``SubscriptionGone``, ``PermanentFailure`` or
    ``TransientFailure``."""
    if not push_endpoint_allowed(subscription.endpoint):
        raise PermanentFailure("endpoint_not_allowed")
    try:
        webpush(
            subscription_info={
                "endpoint": subscription.endpoint,
                "keys": {"p256dh": subscription.p256dh, "auth": subscription.auth},
            },
            data=push_payload(notification),
            vapid_private_key=Vapid02.from_raw(settings.VAPID_PRIVATE_KEY.encode()),
            vapid_claims={"sub": settings.VAPID_SUBJECT},
            ttl=PUSH_TTL_SECONDS,
            timeout=settings.WEB_PUSH_TIMEOUT_SECONDS,
            # The push service keeps only the newest undelivered push of a topic.
            headers={"Topic": notification.pk.hex, "Urgency": "high"},
            requests_session=_push_session(),
        )
    except WebPushException as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status in (404, 410):
            raise SubscriptionGone from exc
        if status == 429 or status >= 500 or status == 0:
            raise TransientFailure(f"push_http_{status}") from exc
        raise PermanentFailure(f"push_http_{status}") from exc
    except requests.RequestException as exc:
        raise TransientFailure(type(exc).__name__) from exc
