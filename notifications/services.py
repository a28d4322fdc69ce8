"""Every write of the notifications app (docs/notifications.md).

The flow: a service elsewhere (a message sent, a call missed, a follow) calls one of
the ``*_on_commit`` functions here; after its transaction commits, a Celery task
records the in-app notification (``notify_*``), updates the badge live, and
schedules the deliveries: a push at once, an email after a window in which more of
the same conversation joins it. Each delivery re-checks at send time that the user
is still away, has not read it, and still wants it; its ``Delivery`` row (one per
idempotency key) makes a retried or redelivered task send nothing twice.
"""

import base64
import hmac
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, Max, OuterRef, Q
from django.utils import timezone

from accounts.models import Block, Device, Mute, User
from common.errors import ApplicationError, Conflict, NotFound
from notifications import channels, selectors
from notifications.channels import push_endpoint_allowed
from notifications.models import (
    CONVERSATION_KINDS,
    Channel,
    Delivery,
    Kind,
    Notification,
    Preference,
    PushSubscription,
)
from realtime import presence
from realtime.publish import publish_now, publish_on_commit

logger = logging.getLogger(__name__)

# How long a retried delivery waits: 30 s, 1 min, 2 min, ... up to 1 hour.
RETRY_BACKOFF_SECONDS = 30
RETRY_BACKOFF_MAX_SECONDS = 3600
MAX_ATTEMPTS = 8
# Each push subscription costs a request per notification: a bound on the fan-out.
MAX_PUSH_SUBSCRIPTIONS = 20


# --- Triggers: called by other apps' services, inside their transactions --------------------


def _enqueue_on_commit(task_name: str, *args: str) -> None:
    """Run a task of ours once the caller's transaction commits. ``robust``: in the
    embedded default the task runs right here, and its failure must not fail the
    caller's request, whose write is already committed."""

    def enqueue() -> None:
        from notifications import tasks  # the tasks import this module

        getattr(tasks, task_name).delay(*args)

    transaction.on_commit(enqueue, robust=True)


# A conversation's pending-count mark outlives a lost task by at most this long.
MESSAGE_COUNT_PENDING_SECONDS = 60


def _message_count_pending_key(conversation_id: Any) -> str:
    return f"notifications:message-count-pending:{conversation_id}"


def message_sent_on_commit(*, message_id: uuid.UUID, conversation_id: uuid.UUID, seq: int) -> None:
    """Count the message into its recipients' notifications, after commit.

    One task per conversation at a time: while one is queued, later messages of the
    conversation ride on it (``notify_messages`` counts everything from its first
    message on). A burst of a hundred messages costs one task, not a hundred, and the
    queue stays as long as the number of busy conversations (docs/performance.md).

    The mark holds the queued task's seq. Messages commit in seq order but their
    hooks may run in any order: a message older than the queued one, or one that
    finds the mark gone, queues its own task. So does every message when the cache
    fails.
    """

    def enqueue() -> None:
        from notifications import tasks  # the tasks import this module

        key = _message_count_pending_key(conversation_id)
        try:
            if not cache.add(key, seq, timeout=MESSAGE_COUNT_PENDING_SECONDS):
                queued = cache.get(key)
                # Still marked: its task has not read yet, and reads from its seq on.
                if queued is not None and int(queued) <= seq:
                    return
        except Exception:
            logger.warning("notification count mark failed; counting on its own", exc_info=True)
        tasks.message_sent.delay(str(message_id), str(conversation_id))

    transaction.on_commit(enqueue, robust=True)


def notify_messages(
    *, message_id: uuid.UUID, conversation_id: uuid.UUID | None = None
) -> list[Notification]:
    """Count ``message_id`` and every later message of its conversation (those that
    rode on this task): each sender's newest one, oldest first, so the newest message
    names the actor. The counts are the recipients' unread counts, so counting a
    sender's newest message counts their earlier ones too."""
    from messaging.models import Message

    # Cleared first, before anything can fail: a message that commits from here on
    # queues its own task, and none rides on a task that failed.
    if conversation_id is not None:
        cache.delete(_message_count_pending_key(conversation_id))
    first = Message.objects.filter(pk=message_id).values("conversation_id", "seq").first()
    if first is None:
        return []
    if conversation_id is None:  # a task queued before the mark existed
        cache.delete(_message_count_pending_key(first["conversation_id"]))
    newest_by_sender = (
        Message.objects.filter(
            conversation_id=first["conversation_id"],
            seq__gte=first["seq"],
            sender__isnull=False,
            deleted_at__isnull=True,
        )
        .values("sender_id")
        .annotate(newest=Max("seq"))
        .values_list("newest", flat=True)
    )
    newest = Message.objects.filter(
        conversation_id=first["conversation_id"], seq__in=list(newest_by_sender)
    ).order_by("seq")
    touched: list[Notification] = []
    for newest_id in newest.values_list("pk", flat=True):
        touched += notify_message(message_id=newest_id)
    return touched


def call_missed_on_commit(*, call_id: uuid.UUID) -> None:
    _enqueue_on_commit("call_missed", str(call_id))


def followed_on_commit(*, follower_id: uuid.UUID, followee_id: uuid.UUID) -> None:
    _enqueue_on_commit("followed", str(follower_id), str(followee_id))


# --- Recording in-app notifications ----------------------------------------------------------


def _publish_created(notification: Notification) -> None:
    publish_on_commit(
        user_ids=[notification.user_id],
        event={"type": "notification", "notification": selectors.notification_fields(notification)},
    )
    _publish_unread(notification.user_id)


def _publish_unread(user_id: Any) -> None:
    def publish() -> None:
        count = selectors.unread_count(user=user_id)
        publish_now(user_ids=[user_id], event={"type": "notifications.unread", "count": count})

    # Counted after commit, so the badge shows what a reload would.
    transaction.on_commit(publish)


def _blocked_or_muted(user_field: str, actor_id: Any) -> Q:
    """Users (``user_field``) who block, are blocked by, or mute ``actor_id``."""
    return (
        Q(Exists(Block.objects.filter(blocker=OuterRef(user_field), blocked=actor_id)))
        | Q(Exists(Block.objects.filter(blocker=actor_id, blocked=OuterRef(user_field))))
        | Q(Exists(Mute.objects.filter(muter=OuterRef(user_field), muted=actor_id)))
    )


def _schedule_deliveries(notification: Notification, *, now: datetime) -> None:
    """Push at once and email after the window's delay, once the caller commits. Both
    run off the request (``run_later``: the broker, or a timer of the server process in
    the embedded default), so a slow push service never holds up a sender."""
    notification.scheduled_at = now
    Notification.objects.filter(pk=notification.pk).update(scheduled_at=now)
    notification_id = str(notification.pk)

    def schedule() -> None:
        from common.tasks import run_later
        from notifications import tasks

        run_later(tasks.deliver_push, (notification_id,), 0)
        run_later(tasks.deliver_email, (notification_id,), settings.NOTIFY_EMAIL_DELAY_SECONDS)

    transaction.on_commit(schedule, robust=True)


def _due_again(notification: Notification, now: datetime) -> bool:
    """A window whose deliveries were skipped (its user was online then) is told when a
    later message comes, at most once per email delay; sent ones are never resent."""
    last = notification.scheduled_at
    return notification.emailed_at is None and (
        last is None or now - last >= timedelta(seconds=settings.NOTIFY_EMAIL_DELAY_SECONDS)
    )


def notify_message(*, message_id: uuid.UUID) -> list[Notification]:
    """Count a new message into each recipient's open notification for its
    conversation, or open one (and schedule its push and email). Idempotent: the
    count is the recipient's unread messages, and a message the recipient read or a
    notification already counted is not counted again.

    Not told: the sender, members who left, declined the request, muted the
    conversation, block or are blocked by the sender, mute the sender, or already
    read past this message."""
    from messaging.models import Membership, Message

    message = (
        Message.objects.select_related("conversation", "sender")
        .filter(pk=message_id, deleted_at__isnull=True)
        .first()
    )
    if message is None or message.sender is None:
        return []
    sender = message.sender
    now = timezone.now()
    recipients = (
        Membership.objects.filter(
            conversation_id=message.conversation_id,
            left_at__isnull=True,
            first_seq__lte=message.seq,
            last_read_seq__lt=message.seq,
            user__is_active=True,
        )
        .exclude(user_id=sender.pk)
        .exclude(state=Membership.State.DECLINED)
        .exclude(muted_until__gt=now)
        .exclude(_blocked_or_muted("user_id", sender.pk))
        .values_list("pk", "state")
    )
    touched = []
    for membership_id, state in recipients:
        kind = Kind.MESSAGE_REQUEST if state == Membership.State.REQUESTED else Kind.MESSAGE
        notification = _count_message(
            membership_id=membership_id, kind=kind, message=message, now=now
        )
        if notification is not None:
            touched.append(notification)
    return touched


@transaction.atomic
def _count_message(
    *, membership_id: int, kind: str, message: Any, now: datetime
) -> Notification | None:
    from messaging.models import Conversation, Membership, Message

    # Locks in the order the senders and readers take them, so none can deadlock: the
    # conversation (message_send holds it while it updates the sender's membership, and
    # our notification row's foreign key would wait for it), then the membership (as
    # read_mark does before it reads the notification, so a read cannot slip between
    # this check and the count), then the notification.
    list(
        Conversation.objects.select_for_update(no_key=True)
        .filter(pk=message.conversation_id)
        .values_list("pk", flat=True)
    )
    membership = (
        Membership.objects.select_for_update(of=("self",))
        .filter(pk=membership_id, left_at__isnull=True)
        .first()
    )
    if membership is None or membership.last_read_seq >= message.seq:
        return None
    user_id = membership.user_id
    conversation_id = message.conversation_id
    told = Notification.objects.filter(
        user_id=user_id, conversation_id=conversation_id, kind__in=CONVERSATION_KINDS
    )
    open_ = told.select_for_update().filter(read_at__isnull=True).first()
    if open_ is None and told.filter(last_seq__gte=message.seq).exists():
        return None  # told already, and read since (a task run again)
    unread = (
        Message.objects.filter(
            conversation_id=conversation_id,
            seq__gt=max(membership.last_read_seq, membership.first_seq - 1),
            deleted_at__isnull=True,
        )
        .exclude(sender_id=user_id)
        .count()
    )
    if open_ is None:
        try:
            with transaction.atomic():
                notification = Notification.objects.create(
                    user_id=user_id, kind=kind, actor=message.sender,
                    conversation_id=conversation_id, count=max(unread, 1),
                    last_seq=message.seq, created_at=now, updated_at=now,
                )  # fmt: skip
        except IntegrityError:
            return None  # cannot happen under the membership lock; never count twice
        notification.conversation = message.conversation
        _publish_created(notification)
        _schedule_deliveries(notification, now=now)
        return notification
    if message.seq <= open_.last_seq and open_.count == unread:
        return None  # counted already (a task run again)
    if message.seq > open_.last_seq:
        # Tasks may run out of order: the newest message names the actor.
        open_.last_seq, open_.kind, open_.actor = message.seq, kind, message.sender
    open_.count = max(unread, 1)
    open_.updated_at = now
    open_.save(update_fields=["count", "last_seq", "kind", "actor", "updated_at"])
    open_.conversation = message.conversation
    _publish_created(open_)
    if _due_again(open_, now):
        _schedule_deliveries(open_, now=now)
    return open_


@transaction.atomic
def notify_missed_call(*, call_id: uuid.UUID) -> Notification | None:
    """The callee missed a call (no answer, busy, or the caller gave up while it
    rang). Idempotent: one notification per call."""
    from calls.models import Call

    call = Call.objects.select_related("caller", "callee").filter(pk=call_id).first()
    if call is None or call.answered_at is not None:
        return None
    muted = User.objects.filter(pk=call.callee_id).filter(_blocked_or_muted("pk", call.caller_id))
    if muted.exists():
        return None
    notification, created = Notification.objects.get_or_create(
        user_id=call.callee_id,
        call=call,
        defaults={"kind": Kind.MISSED_CALL, "actor": call.caller, "created_at": call.created_at},
    )
    if created:
        _publish_created(notification)
        _schedule_deliveries(notification, now=timezone.now())
    return notification


@transaction.atomic
def notify_new_follower(*, follower_id: uuid.UUID, followee_id: uuid.UUID) -> Notification | None:
    """Someone follows the user (still, when the task runs). Following again while the
    first notification is unread does not make a second one."""
    from accounts.models import Follow

    follow = (
        Follow.objects.select_related("follower")
        .filter(follower_id=follower_id, followee_id=followee_id)
        .exclude(_blocked_or_muted("followee_id", follower_id))
        .first()
    )
    if follow is None:
        return None
    try:
        with transaction.atomic():
            notification, created = Notification.objects.get_or_create(
                user_id=followee_id, actor_id=follower_id, kind=Kind.NEW_FOLLOWER,
                read_at__isnull=True, defaults={"actor": follow.follower},
            )  # fmt: skip
    except IntegrityError:
        return None  # another task made it meanwhile
    if created:
        _publish_created(notification)
        _schedule_deliveries(notification, now=timezone.now())
    return notification


# --- Reading ---------------------------------------------------------------------------------


@transaction.atomic
def notifications_mark_read(*, user: User, ids: list[uuid.UUID] | None) -> int:
    """Mark these (or, with ``None``, all) of the user's notifications read. Returns
    the unread count after. Ids of other users' notifications change nothing."""
    unread = Notification.objects.filter(user=user, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=ids)
    if unread.update(read_at=timezone.now()):
        _publish_unread(user.pk)
    return selectors.unread_count(user=user)


def notifications_read_for_conversation(
    *, user: User, conversation_id: uuid.UUID, seq: int
) -> None:
    """Reading a conversation up to ``seq`` reads its notification when nothing newer
    is in it (called inside messaging's read_mark)."""
    changed = Notification.objects.filter(
        user=user,
        conversation_id=conversation_id,
        kind__in=CONVERSATION_KINDS,
        read_at__isnull=True,
        last_seq__lte=seq,
    ).update(read_at=timezone.now())
    if changed:
        _publish_unread(user.pk)


# --- Preferences -----------------------------------------------------------------------------


@transaction.atomic
def preferences_update(
    *, user: User, changes: dict[str, dict[str, bool]]
) -> dict[str, dict[str, bool]]:
    """Set some preferences, all or nothing. ``changes`` is ``{kind: {channel: bool}}``."""
    allowed = {kind: channels_ for kind, _label, channels_ in selectors.PREFERENCE_ROWS}
    if not isinstance(changes, dict):
        raise ApplicationError(
            "invalid", "Preferences are an object of kinds.", field="preferences"
        )
    for kind, by_channel in changes.items():
        if kind not in allowed:
            raise ApplicationError(
                "invalid_choice", f"{str(kind)[:40]!r} is not a kind of notification.",
                field=f"preferences.{str(kind)[:40]}",
            )  # fmt: skip
        if not isinstance(by_channel, dict):
            raise ApplicationError(
                "invalid", "Each kind maps channels to true or false.", field=f"preferences.{kind}"
            )
        for channel, enabled in by_channel.items():
            if channel not in allowed[kind]:
                raise ApplicationError(
                    "invalid_choice",
                    f"{kind} can be chosen for {', '.join(allowed[kind])} only.",
                    field=f"preferences.{kind}.{str(channel)[:20]}",
                )
            if not isinstance(enabled, bool):
                raise ApplicationError(
                    "invalid", "Must be true or false.", field=f"preferences.{kind}.{channel}"
                )
    for kind, by_channel in changes.items():
        for channel, enabled in by_channel.items():
            Preference.objects.update_or_create(
                user=user, kind=kind, channel=channel, defaults={"enabled": enabled}
            )
    return selectors.preferences_for(user=user)


# --- Push subscriptions ----------------------------------------------------------------------


def _b64u_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _check_push_keys(p256dh: str, auth: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        public = _b64u_decode(p256dh)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        if len(public) != 65:
            raise ValueError
    except (ValueError, TypeError):
        raise ApplicationError(
            "invalid", "Not a P-256 public key (base64url, uncompressed).", field="keys.p256dh"
        ) from None
    try:
        if len(_b64u_decode(auth)) != 16:
            raise ValueError
    except (ValueError, TypeError):
        raise ApplicationError(
            "invalid", "The auth secret is 16 bytes, base64url.", field="keys.auth"
        ) from None


@transaction.atomic
def push_subscribe(
    *, user: User, endpoint: str, p256dh: str, auth: str, device_id: uuid.UUID
) -> PushSubscription:
    """Save a browser's push subscription, tied to the browser's device: unlinking
    the browser (which signing out does) stops its pushes. The same endpoint again (a
    browser that re-subscribes, or another account signing in on it) replaces the row."""
    if not settings.VAPID_PUBLIC_KEY:
        raise ApplicationError("push_unavailable", "This server does not send push notifications.")
    if not push_endpoint_allowed(endpoint):
        raise ApplicationError(
            "endpoint_not_allowed", "That is not the address of a known push service.",
            field="endpoint",
        )  # fmt: skip
    _check_push_keys(p256dh, auth)
    device = Device.objects.filter(pk=device_id, user=user, revoked_at__isnull=True).first()
    if device is None:
        raise NotFound("device_not_found", "No such device of yours.", field="device_id")
    taken = PushSubscription.objects.select_for_update().filter(endpoint=endpoint).first()
    if taken is not None and taken.user_id != user.pk and not hmac.compare_digest(taken.auth, auth):
        # Moving a browser's subscription to another account takes its auth secret, which
        # only that browser and we know: an endpoint alone does not let anyone take it.
        raise Conflict("endpoint_taken", "That push subscription belongs to another browser.",
                       field="endpoint")  # fmt: skip
    if taken is None and (
        PushSubscription.objects.filter(user=user).count() >= MAX_PUSH_SUBSCRIPTIONS
    ):
        raise ApplicationError(
            "too_many_subscriptions",
            f"At most {MAX_PUSH_SUBSCRIPTIONS} browsers can get pushes; turn one off first.",
            field="endpoint",
        )
    subscription, _ = PushSubscription.objects.update_or_create(
        endpoint=endpoint,
        defaults={
            "user": user, "device": device, "p256dh": p256dh, "auth": auth,
            "created_at": timezone.now(), "last_success_at": None, "failing_since": None,
        },
    )  # fmt: skip
    return subscription


@transaction.atomic
def push_unsubscribe(*, user: User, endpoint: str) -> bool:
    deleted, _ = PushSubscription.objects.filter(user=user, endpoint=endpoint).delete()
    return bool(deleted)


def push_subscriptions_delete_for_device(*, device_id: uuid.UUID) -> None:
    """An unlinked browser gets no more pushes (inside the revoking transaction)."""
    PushSubscription.objects.filter(device_id=device_id).delete()


# --- Deliveries ------------------------------------------------------------------------------


class DeliveryRetry(Exception):
    """A delivery failed for a reason that may pass (mail server down, push service
    busy, another run still sending): the task retries it later, after ``countdown``
    seconds when given, else after the backoff."""

    def __init__(self, detail: str, *, countdown: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail[:40]
        self.countdown = countdown


def retry_countdown(retries: int) -> int:
    return int(min(RETRY_BACKOFF_MAX_SECONDS, RETRY_BACKOFF_SECONDS * 2**retries))


@dataclass(frozen=True)
class Target:
    """What one delivery is: its idempotency key and whom, how and what it tells."""

    key: str
    user_id: Any
    channel: str
    notification: Notification | None
    subscription: PushSubscription | None = None


def _claim(target: Target) -> Delivery | None:
    """The delivery row for the target's key, leased to this run for
    DELIVERY_LEASE_SECONDS and counted as one more attempt. None when it is already
    finished (sent, skipped, failed or gone): then nothing is sent again. Raises
    ``DeliveryRetry`` while another run holds the lease (it may be sending now; if its
    worker died, the lease runs out and the retry takes over)."""
    delivery, _ = Delivery.objects.get_or_create(
        key=target.key,
        defaults={
            "user_id": target.user_id, "channel": target.channel,
            "notification": target.notification, "subscription": target.subscription,
        },
    )  # fmt: skip
    now = timezone.now()
    taken = (
        Delivery.objects.filter(pk=delivery.pk, state=Delivery.State.SENDING)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))
        .update(
            claimed_until=now + timedelta(seconds=settings.DELIVERY_LEASE_SECONDS),
            attempts=F("attempts") + 1,
        )
    )
    state, claimed_until = Delivery.objects.values_list("state", "claimed_until").get(
        pk=delivery.pk
    )
    if taken:
        delivery.refresh_from_db(fields=["attempts", "claimed_until"])
        return delivery
    if state != Delivery.State.SENDING:
        return None
    wait = (claimed_until - now).total_seconds() if claimed_until else 1
    raise DeliveryRetry("in_progress", countdown=max(1, int(wait) + 1))


def _release(delivery: Delivery) -> None:
    """Give the lease back after a failure that a retry will try again."""
    Delivery.objects.filter(pk=delivery.pk).update(claimed_until=None)


def _finish(delivery: Delivery, state: str, detail: str = "") -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        state=state, detail=detail, finished_at=timezone.now(), claimed_until=None
    )


def _skip(target: Target, detail: str) -> str:
    delivery = _claim(target)
    if delivery is not None:
        _finish(delivery, Delivery.State.SKIPPED, detail)
    return detail


def _unwanted(notification: Notification) -> str:
    """Why the user no longer wants to hear of it, or "": what changed since it was
    recorded (a conversation muted, left or declined; its actor blocked or muted)."""
    from messaging.models import Membership

    if notification.kind in CONVERSATION_KINDS and notification.conversation_id is not None:
        membership = (
            Membership.objects.filter(
                conversation_id=notification.conversation_id,
                user_id=notification.user_id,
                left_at__isnull=True,
            )
            .values("state", "muted_until")
            .first()
        )
        if membership is None:
            return "left"
        if membership["state"] == Membership.State.DECLINED:
            return "declined"
        if membership["muted_until"] is not None and membership["muted_until"] > timezone.now():
            return "muted"
    if notification.actor_id is not None and (
        User.objects.filter(pk=notification.user_id)
        .filter(_blocked_or_muted("pk", notification.actor_id))
        .exists()
    ):
        return "blocked_or_muted"
    return ""


def _is_online(user_id: Any) -> bool:
    try:
        return presence.is_online(user_id)
    except redis.RedisError as exc:
        # Not knowing is not "away": wait and ask again rather than send or drop it.
        raise DeliveryRetry("presence_unavailable") from exc


def _skip_reason(notification: Notification, channel: str) -> str:
    """Why this notification is not to be told on ``channel`` now, or "". All but
    "online" are final for this window; "online" is not recorded, so a later message
    of the same window (or the digest) can still tell it once the user is away."""
    user = notification.user
    if notification.is_read:
        return "read"
    if not user.is_active or user.is_suspended:
        return "inactive"
    if not selectors.wants(user=user, kind=notification.kind, channel=channel):
        return "preference_off"
    if reason := _unwanted(notification):
        return reason
    if _is_online(user.pk):
        return "online"
    return ""


def deliver_email(*, notification_id: uuid.UUID, final_attempt: bool = False) -> str:
    """Email one notification to an away user, once. Returns what happened.
    Raises ``DeliveryRetry`` when the mail server fails (the task retries)."""
    notification = (
        Notification.objects.select_related("user", "actor", "conversation")
        .filter(pk=notification_id)
        .first()
    )
    if notification is None:
        return "deleted"
    key = f"email:{notification.pk}"
    target = Target(key, notification.user_id, Channel.EMAIL, notification)
    reason = _skip_reason(notification, Channel.EMAIL) or (
        "" if notification.user.email else "no_email"
    )
    if reason == "online":
        return reason
    if reason:
        return _skip(target, reason)
    delivery = _claim(target)
    if delivery is None:
        return "done_before"
    try:
        channels.send_notification_email(notification, message_id=f"<{delivery.pk}@parley>")
    except channels.TransientFailure as exc:
        if final_attempt or delivery.attempts >= MAX_ATTEMPTS:
            _finish(delivery, Delivery.State.FAILED, exc.detail)
            return "failed"
        _release(delivery)
        raise DeliveryRetry(exc.detail) from exc
    _finish(delivery, Delivery.State.SENT)
    Notification.objects.filter(pk=notification.pk).update(
        emailed_at=timezone.now(), emailed_count=notification.count
    )
    return "sent"


def deliver_push(*, notification_id: uuid.UUID, final_attempt: bool = False) -> dict[str, str]:
    """Push one notification to each of an away user's browsers, once each. Returns
    ``{subscription id: what happened}``. Raises ``DeliveryRetry`` when a push
    service failed for a reason that may pass; the retry sends only to the rest."""
    notification = (
        Notification.objects.select_related("user", "actor", "conversation")
        .filter(pk=notification_id)
        .first()
    )
    if notification is None:
        return {}
    subscriptions = list(PushSubscription.objects.filter(user_id=notification.user_id))
    if not subscriptions:
        return {}
    reason = _skip_reason(notification, Channel.PUSH) or (
        "" if settings.VAPID_PRIVATE_KEY else "push_unavailable"
    )
    outcomes: dict[str, str] = {}
    retry: list[DeliveryRetry] = []
    for subscription in subscriptions:
        key = f"push:{notification.pk}:{subscription.pk}"
        target = Target(key, notification.user_id, Channel.PUSH, notification, subscription)
        try:
            if reason == "online":
                outcomes[str(subscription.pk)] = reason
            elif reason:
                outcomes[str(subscription.pk)] = _skip(target, reason)
            elif (delivery := _claim(target)) is None:
                outcomes[str(subscription.pk)] = "done_before"
            else:
                outcomes[str(subscription.pk)] = _push_one(
                    notification, subscription, delivery, final_attempt=final_attempt
                )
        except DeliveryRetry as exc:
            outcomes[str(subscription.pk)] = "retry"
            retry.append(exc)
    if retry:
        raise DeliveryRetry(
            ", ".join(exc.detail for exc in retry)[:40],
            countdown=max((exc.countdown or 0 for exc in retry), default=0) or None,
        )
    return outcomes


def _push_one(
    notification: Notification, subscription: PushSubscription, delivery: Delivery,
    *, final_attempt: bool,
) -> str:  # fmt: skip
    now = timezone.now()
    # A subscription counts as failing only when a delivery finally fails, not on the
    # first busy answer of a push service.
    failing = PushSubscription.objects.filter(pk=subscription.pk, failing_since__isnull=True)
    try:
        channels.send_web_push(notification, subscription)
    except channels.SubscriptionGone:
        _finish(delivery, Delivery.State.GONE, "gone")
        subscription.delete()
        return "gone"
    except channels.PermanentFailure as exc:
        _finish(delivery, Delivery.State.FAILED, exc.detail)
        failing.update(failing_since=now)
        return "failed"
    except channels.TransientFailure as exc:
        if final_attempt or delivery.attempts >= MAX_ATTEMPTS:
            _finish(delivery, Delivery.State.FAILED, exc.detail)
            failing.update(failing_since=now)
            return "failed"
        _release(delivery)
        raise DeliveryRetry(exc.detail) from exc
    _finish(delivery, Delivery.State.SENT)
    PushSubscription.objects.filter(pk=subscription.pk).update(
        last_success_at=now, failing_since=None
    )
    return "sent"


def deliveries_give_up(*, notification_id: uuid.UUID, channel: str, detail: str) -> int:
    """After the last retry: what is still being sent has failed."""
    return Delivery.objects.filter(
        notification_id=notification_id, channel=channel, state=Delivery.State.SENDING
    ).update(
        state=Delivery.State.FAILED, detail=detail[:40], finished_at=timezone.now(),
        claimed_until=None,
    )  # fmt: skip


# --- Digest and pruning (beat) ---------------------------------------------------------------


def digest_candidates(*, now: datetime) -> Iterable[uuid.UUID]:
    """Users with something unread for DIGEST_AFTER_SECONDS that no email told yet."""
    before = now - timedelta(seconds=settings.DIGEST_AFTER_SECONDS)
    return (
        Notification.objects.filter(read_at__isnull=True, updated_at__lte=before)
        .filter(Q(emailed_at__isnull=True) | Q(emailed_count__lt=F("count")))
        .values_list("user_id", flat=True)
        .distinct()
    )


def send_digest(*, user_id: uuid.UUID, now: datetime | None = None) -> str:
    """One email per UTC day, at most, listing what stays unread and untold."""
    now = now or timezone.now()
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return "deleted"
    key = f"digest:{user.pk}:{now.date().isoformat()}"
    target = Target(key, user.pk, Channel.EMAIL, None)
    before = now - timedelta(seconds=settings.DIGEST_AFTER_SECONDS)
    untold = list(
        selectors.notifications_for(user=user, unread_only=True)
        .filter(updated_at__lte=before)
        .filter(Q(emailed_at__isnull=True) | Q(emailed_count__lt=F("count")))[:20]
    )
    untold = [notification for notification in untold if not _unwanted(notification)]
    if not untold:
        return "nothing"
    if Delivery.objects.filter(key=key).exclude(state=Delivery.State.SENDING).exists():
        return "done_before"
    if not user.is_active or user.is_suspended:
        return _skip(target, "inactive")
    if not user.email:
        return _skip(target, "no_email")
    if not selectors.wants(user=user, kind=Preference.PreferenceKind.DIGEST, channel=Channel.EMAIL):
        return _skip(target, "preference_off")
    if _is_online(user.pk):
        return "online"  # not recorded: a later run may still send one
    delivery = _claim(target)
    if delivery is None:
        return "done_before"
    try:
        channels.send_digest_email(user, untold, message_id=f"<{delivery.pk}@parley>")
    except channels.TransientFailure as exc:
        _finish(delivery, Delivery.State.FAILED, exc.detail)  # tomorrow's digest tries again
        return "failed"
    _finish(delivery, Delivery.State.SENT)
    for notification in untold:
        Notification.objects.filter(pk=notification.pk).update(
            emailed_at=now, emailed_count=notification.count
        )
    return "sent"


@transaction.atomic
def notifications_prune(*, now: datetime | None = None) -> dict[str, int]:
    """Forget old notifications, their deliveries, and push subscriptions that
    have failed for PUSH_SUBSCRIPTION_FAILING_DAYS."""
    now = now or timezone.now()
    read_before = now - timedelta(days=settings.NOTIFICATIONS_KEEP_READ_DAYS)
    any_before = now - timedelta(days=settings.NOTIFICATIONS_KEEP_DAYS)
    notifications, _ = Notification.objects.filter(
        Q(read_at__lte=read_before) | Q(updated_at__lte=any_before)
    ).delete()
    deliveries, _ = Delivery.objects.filter(
        notification__isnull=True, created_at__lte=any_before
    ).delete()
    failing_before = now - timedelta(days=settings.PUSH_SUBSCRIPTION_FAILING_DAYS)
    subscriptions, _ = PushSubscription.objects.filter(failing_since__lte=failing_before).delete()
    return {
        "notifications": notifications,
        "deliveries": deliveries,
        "push_subscriptions": subscriptions,
    }
