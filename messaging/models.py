"""Conversations and end-to-end encrypted messages (PROTOCOL.md sections 3 to 5).

The server holds ciphertext, per-device key wraps and metadata only. See
docs/messages.md.
"""

import uuid
from datetime import UTC, datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

# "Until I unmute": a date no one reaches.
MUTED_FOREVER = datetime(9999, 12, 31, tzinfo=UTC)


class Conversation(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "Direct"
        GROUP = "group", "Group"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=6, choices=Kind.choices)
    # "<lower user id>:<higher user id>" for direct conversations: one per pair.
    direct_key = models.CharField(max_length=73, null=True, blank=True, unique=True)
    # Group names are metadata the server sees; the clients say so where it is typed.
    name = models.CharField(max_length=64, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    # The seq of the newest message; messages take last_seq + 1 under a row lock.
    last_seq = models.BigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    disappearing_seconds = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(kind="direct", direct_key__isnull=False)
                    | models.Q(kind="group", direct_key__isnull=True)
                ),
                name="conversation_direct_key_iff_direct",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} conversation {self.pk}"


class Membership(models.Model):
    class Role(models.TextChoices):
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"

    class State(models.TextChoices):
        ACCEPTED = "accepted", "Accepted"
        # A first message from someone the recipient does not follow: in the requests inbox.
        REQUESTED = "requested", "Message request"
        # Declined request: hidden from the recipient; the sender is not told.
        DECLINED = "declined", "Declined"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=6, choices=Role.choices, default=Role.MEMBER)
    # Who put this user in the conversation (the starter of a direct one, the admin who
    # added them to a group): blocking "from the request" blocks this person.
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
    )  # fmt: skip
    state = models.CharField(max_length=9, choices=State.choices, default=State.ACCEPTED)
    joined_at = models.DateTimeField(default=timezone.now)
    left_at = models.DateTimeField(null=True, blank=True)
    # Messages up to this seq were read by the user (the read receipt).
    last_read_seq = models.BigIntegerField(default=0)
    # The first message this member may see: members added to a group later do not
    # see (even the metadata of) what was sent before they joined.
    first_seq = models.BigIntegerField(default=1)
    # No notifications from this conversation until then (MUTED_FOREVER: until unmuted).
    muted_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user"], name="membership_unique"),
        ]
        indexes = [models.Index(fields=["user", "left_at"], name="membership_user_active_idx")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.conversation_id}"

    @property
    def is_active(self) -> bool:
        return self.left_at is None

    @property
    def is_muted(self) -> bool:
        return self.muted_until is not None and self.muted_until > timezone.now()


class Message(models.Model):
    """One encrypted message. After "delete for everyone" or expiry it is a tombstone:
    ciphertext and every key erased, the metadata row kept so seqs stay gap-free."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    seq = models.BigIntegerField()
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    sender_device = models.ForeignKey(
        "accounts.Device", on_delete=models.SET_NULL, null=True, related_name="+"
    )
    client_id = models.UUIDField()
    nonce = models.BinaryField(max_length=24)
    ciphertext = models.BinaryField()
    franking_tag = models.BinaryField(max_length=32)
    franking_stamp = models.BinaryField(max_length=32)
    # {device_id: b64u(n_d || box(K))} and {user_id: b64u(seal(K, hk_pub))}.
    keys = models.JSONField(default=dict)
    history_keys = models.JSONField(default=dict)
    server_ts = models.BigIntegerField(help_text="Unix milliseconds, as in the franking stamp.")
    size = models.PositiveIntegerField(help_text="Bytes of ciphertext, kept after erasure.")
    expires_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["sender_device", "client_id"], name="message_client_id_unique"
            ),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="message_expiry_idx",
                condition=models.Q(expires_at__isnull=False, deleted_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"message {self.seq} in {self.conversation_id}"

    @property
    def is_erased(self) -> bool:
        return self.deleted_at is not None


class DeviceCursor(models.Model):
    """How far a device has acknowledged delivery in a conversation."""

    device = models.ForeignKey("accounts.Device", on_delete=models.CASCADE, related_name="+")
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    delivered_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["device", "conversation"], name="device_cursor_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} delivered {self.delivered_seq} in {self.conversation_id}"


class Attachment(models.Model):
    """An encrypted blob. The key, name and type live only inside message payloads."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="attachments"
    )
    uploader = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    blob = models.FileField(upload_to="attachments/")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"attachment {self.pk}"


class Report(models.Model):
    """A user's report of a message (with the franking proof, PROTOCOL.md section 4) or
    of a profile. docs/moderation.md.

    ``content`` holds the payload only for a message report whose proof verified: then
    it is what the sender really sent, disclosed by the reporter. The franking key is
    kept so that the panel checks the proof again before it shows the content. Nothing
    else of the conversation is ever shown to moderators. Reports change only through
    ``moderation.services`` (assign, resolve), which write the audit log.
    """

    class Kind(models.TextChoices):
        MESSAGE = "message", "Message"
        PROFILE = "profile", "Profile"

    class Reason(models.TextChoices):
        SPAM = "spam", "Spam"
        HARASSMENT = "harassment", "Harassment"
        HATE = "hate", "Hate"
        VIOLENCE = "violence", "Violence or threats"
        SEXUAL = "sexual", "Sexual content"
        SELF_HARM = "self_harm", "Self-harm"
        IMPERSONATION = "impersonation", "Impersonation"
        OTHER = "other", "Other"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.MESSAGE)
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    reported_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, related_name="+")
    message_sent_at = models.BigIntegerField(
        null=True, blank=True, help_text="server_ts of the message (ms)."
    )
    reason = models.CharField(max_length=16, choices=Reason.choices)
    comment = models.CharField(max_length=1000, blank=True)
    verified = models.BooleanField(default=False)
    content = models.TextField(blank=True)
    franking_key = models.BinaryField(max_length=32, default=b"", editable=False)
    # A profile report keeps the public profile as it was: it may change before review.
    profile_snapshot = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    assigned_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolution = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "created_at"], name="report_queue_idx"),
            models.Index(fields=["reported_user", "-created_at"], name="report_against_idx"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["reporter", "message"], name="report_once_per_message"),
            models.UniqueConstraint(
                fields=["reporter", "reported_user"],
                condition=models.Q(kind="profile", status="open"),
                name="report_profile_once_while_open",
            ),
            models.CheckConstraint(
                condition=models.Q(kind="profile") | models.Q(message_sent_at__isnull=False),
                name="report_message_has_time",
            ),
            models.CheckConstraint(
                condition=models.Q(status="open", resolved_at__isnull=True)
                | models.Q(status="resolved", resolved_at__isnull=False),
                name="report_resolved_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"report {self.pk}"
