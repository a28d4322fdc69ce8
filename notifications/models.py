"""Notifications: what to tell a user who is away, and how it was told (docs/notifications.md).

A notification names who did what and where (the kind, the actor, the
conversation or call): never what was said. Message content is end-to-end
encrypted and the server cannot read it; a notification could not carry it even
by mistake, and tests check that it does not.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Kind(models.TextChoices):
    MESSAGE = "message", "New messages"
    MESSAGE_REQUEST = "message_request", "Message requests"
    MISSED_CALL = "missed_call", "Missed calls"
    NEW_FOLLOWER = "new_follower", "New followers"


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    PUSH = "push", "Push"


# Kinds that gather every message of one conversation while it stays unread.
CONVERSATION_KINDS = (Kind.MESSAGE, Kind.MESSAGE_REQUEST)


class Notification(models.Model):
    """One line of the notification centre. Messages in one conversation share one
    open (unread) notification, counted: the coalescing window lasts until it is read."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )  # fmt: skip
    conversation = models.ForeignKey(
        "messaging.Conversation", on_delete=models.CASCADE, null=True, blank=True,
        related_name="+",
    )  # fmt: skip
    call = models.ForeignKey(
        "calls.Call", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # Messages counted; ``last_seq`` is the newest one, so a retried task counts nothing twice.
    count = models.PositiveIntegerField(default=1)
    last_seq = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)
    # When its push and email were last scheduled: a window that opened while the user
    # was online is scheduled again by a later message, at most once per email delay.
    scheduled_at = models.DateTimeField(null=True, blank=True)
    # Set when an email or digest told of it (up to ``emailed_count`` messages).
    emailed_at = models.DateTimeField(null=True, blank=True)
    emailed_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            # The coalescing window: one open notification per conversation and user.
            models.UniqueConstraint(
                fields=["user", "conversation"],
                condition=models.Q(read_at__isnull=True, kind__in=CONVERSATION_KINDS),
                name="notification_one_open_per_conversation",
            ),
            models.UniqueConstraint(
                fields=["user", "call"],
                condition=models.Q(call__isnull=False),
                name="notification_one_per_call",
            ),
            models.UniqueConstraint(
                fields=["user", "actor", "kind"],
                condition=models.Q(read_at__isnull=True, kind="new_follower"),
                name="notification_one_open_per_follower",
            ),
            models.CheckConstraint(
                condition=(
                    ~models.Q(kind__in=CONVERSATION_KINDS) | models.Q(conversation__isnull=False)
                ),
                name="notification_message_has_conversation",
            ),
            models.CheckConstraint(
                condition=~models.Q(kind="missed_call") | models.Q(call__isnull=False),
                name="notification_missed_call_has_call",
            ),
        ]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="notification_user_recent_idx"),
            models.Index(
                fields=["user"],
                condition=models.Q(read_at__isnull=True),
                name="notification_user_unread_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}"

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


class Preference(models.Model):
    """A user's choice for one kind on one channel; absent means the default
    (``notifications.selectors.DEFAULT_PREFERENCES``). In-app is always on."""

    class PreferenceKind(models.TextChoices):
        MESSAGE = Kind.MESSAGE.value, Kind.MESSAGE.label
        MESSAGE_REQUEST = Kind.MESSAGE_REQUEST.value, Kind.MESSAGE_REQUEST.label
        MISSED_CALL = Kind.MISSED_CALL.value, Kind.MISSED_CALL.label
        NEW_FOLLOWER = Kind.NEW_FOLLOWER.value, Kind.NEW_FOLLOWER.label
        DIGEST = "digest", "Daily digest of what stays unread"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    kind = models.CharField(max_length=16, choices=PreferenceKind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    enabled = models.BooleanField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "kind", "channel"], name="notification_preference_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}/{self.channel} for {self.user_id}: {self.enabled}"


class PushSubscription(models.Model):
    """A browser's Web Push subscription (the Push API's endpoint and its keys)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions"
    )
    # The browser device it belongs to: unlinking the browser removes it.
    device = models.ForeignKey(
        "accounts.Device", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    endpoint = models.URLField(max_length=1024, unique=True)
    p256dh = models.CharField(max_length=100)  # base64url, the browser's P-256 public key
    auth = models.CharField(max_length=40)  # base64url, the 16-byte auth secret
    created_at = models.DateTimeField(default=timezone.now)
    last_success_at = models.DateTimeField(null=True, blank=True)
    # Since when every attempt failed (not counting "gone", which deletes the row).
    failing_since = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"push subscription of {self.user_id}"


class Delivery(models.Model):
    """One attempt to tell a notification on one channel (and, for push, to one
    subscription). ``key`` is the idempotency key: a retried task finds the row and
    sends nothing twice."""

    class State(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"
        GONE = "gone", "Subscription gone"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, null=True, blank=True, related_name="deliveries"
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    channel = models.CharField(max_length=8, choices=Channel.choices)
    subscription = models.ForeignKey(
        PushSubscription, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    key = models.CharField(max_length=120, unique=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.SENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # A lease: the task that claimed the row sends until then; another run waits.
    claimed_until = models.DateTimeField(null=True, blank=True)
    # A short reason code (never content): why it was skipped or failed.
    detail = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.channel} delivery {self.key}: {self.state}"
