"""Background work of the accounts app. Thin: take ids, re-fetch, call services."""

import logging
import smtplib

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string

from accounts.models import SecurityEvent
from accounts.services import security_event_mark_emailed, security_event_release

logger = logging.getLogger(__name__)


@shared_task(
    name="accounts.send_security_event_email",
    acks_late=True,
    autoretry_for=(smtplib.SMTPException, ConnectionError, TimeoutError),
    retry_backoff=True,
    retry_backoff_max=600,
    max_retries=8,
)
def send_security_event_email(event_id: int) -> None:
    """Tell the owner by e-mail that their account's security changed.

    Idempotent: the event is claimed before sending, so a retry after a successful
    send sends nothing. If sending fails the claim is rolled back and retried.
    """
    event = SecurityEvent.objects.select_related("user", "device").filter(pk=event_id).first()
    if event is None or event.emailed_at is not None:
        return
    body = render_to_string(
        "accounts/email/security_event.txt",
        {"event": event, "user": event.user, "device": event.device},
    )
    if not security_event_mark_emailed(event_id=event_id):
        return
    try:
        send_mail(
            subject=f"Parley: {event.get_kind_display()}",
            message=body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[event.user.email],
        )
    except Exception:
        security_event_release(event_id=event_id)
        raise
