"""Background work of the notifications app: thin, idempotent, retried with backoff.

Every task takes ids and calls a service. Deliveries run ``acks_late`` (the broker
keeps the task until it is done, so a worker that dies hands it to the next) and
retry with exponential backoff on failures that may pass.
"""

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import Task, shared_task
from django.db import OperationalError
from django.utils import timezone

from notifications import services


@shared_task(
    name="notifications.message_sent",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Messages of a burst ride on this task: a database blip must not lose them all.
    autoretry_for=(OperationalError,),
    retry_backoff=services.RETRY_BACKOFF_SECONDS,
    retry_backoff_max=services.RETRY_BACKOFF_MAX_SECONDS,
    max_retries=services.MAX_ATTEMPTS - 1,
)
def message_sent(message_id: str, conversation_id: str | None = None) -> int:
    return len(
        services.notify_messages(
            message_id=uuid.UUID(message_id),
            conversation_id=uuid.UUID(conversation_id) if conversation_id else None,
        )
    )


@shared_task(
    name="notifications.call_missed", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def call_missed(call_id: str) -> bool:
    return services.notify_missed_call(call_id=uuid.UUID(call_id)) is not None


@shared_task(
    name="notifications.followed", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def followed(follower_id: str, followee_id: str) -> bool:
    notification = services.notify_new_follower(
        follower_id=uuid.UUID(follower_id), followee_id=uuid.UUID(followee_id)
    )
    return notification is not None


def _deliver(
    task: Task[Any, Any], deliver: Callable[..., object], channel: str, notification_id: str
) -> object:
    final = task.request.retries >= services.MAX_ATTEMPTS - 1
    try:
        return deliver(notification_id=uuid.UUID(notification_id), final_attempt=final)
    except services.DeliveryRetry as exc:
        if task.request.is_eager:
            # In-process (the embedded default) there is no broker to wait in: give up
            # on this one rather than block a request; the digest tells it later.
            services.deliveries_give_up(
                notification_id=uuid.UUID(notification_id), channel=channel, detail=str(exc)
            )
            return "failed"
        countdown = exc.countdown or services.retry_countdown(task.request.retries)
        raise task.retry(exc=exc, countdown=countdown) from exc


@shared_task(
    name="notifications.deliver_email",
    bind=True,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_email(self: Task[Any, Any], notification_id: str) -> object:
    return _deliver(self, services.deliver_email, "email", notification_id)


@shared_task(
    name="notifications.deliver_push",
    bind=True,
    max_retries=None,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def deliver_push(self: Task[Any, Any], notification_id: str) -> object:
    return _deliver(self, services.deliver_push, "push", notification_id)


@shared_task(
    name="notifications.send_digests",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def send_digests() -> int:
    """Periodic (beat): one digest task per user with something unread and untold."""
    now = timezone.now()
    users = list(services.digest_candidates(now=now))
    for user_id in users:
        send_digest.delay(str(user_id), now.isoformat())
    return len(users)


@shared_task(
    name="notifications.send_digest", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def send_digest(user_id: str, now: str) -> str:
    return services.send_digest(user_id=uuid.UUID(user_id), now=datetime.fromisoformat(now))


@shared_task(
    name="notifications.prune", acks_late=True, reject_on_worker_lost=True, ignore_result=True
)
def prune() -> dict[str, int]:
    """Periodic (beat): old notifications and deliveries, dead push subscriptions."""
    return services.notifications_prune()
