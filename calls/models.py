"""The call record (docs/calls.md). Metadata only: the boxed SDPs it holds while a
call rings are opaque to the server and erased when the call ends."""

from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import Device, User


class Call(models.Model):
    class Media(models.TextChoices):
        AUDIO = "audio", "Voice"
        VIDEO = "video", "Video"

    class State(models.TextChoices):
        RINGING = "ringing", "Ringing"
        ACTIVE = "active", "In progress"
        ENDED = "ended", "Ended"
        DECLINED = "declined", "Declined"
        CANCELLED = "cancelled", "Cancelled"
        MISSED = "missed", "Missed"
        BUSY = "busy", "Busy"
        FAILED = "failed", "Failed"

    class EndReason(models.TextChoices):
        HANGUP = "hangup", "Hung up"
        DECLINED = "declined", "Declined"
        CANCELLED = "cancelled", "Cancelled"
        TIMEOUT = "timeout", "No answer"
        BUSY = "busy", "Busy"
        GLARE = "glare", "Both called at once"
        FAILED = "failed", "Connection failed"
        CONNECTION_LOST = "connection_lost", "Connection lost"
        UNAVAILABLE = "unavailable", "No longer available"

    LIVE_STATES = (State.RINGING, State.ACTIVE)

    # Chosen by the caller's client: glare compares the two calls' ids.
    id = models.UUIDField(primary_key=True, editable=False)
    caller = models.ForeignKey(User, on_delete=models.CASCADE, related_name="calls_made")
    callee = models.ForeignKey(User, on_delete=models.CASCADE, related_name="calls_received")
    caller_device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    callee_device = models.ForeignKey(
        Device, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    media = models.CharField(max_length=5, choices=Media.choices)
    state = models.CharField(max_length=10, choices=State.choices, default=State.RINGING)
    end_reason = models.CharField(max_length=16, choices=EndReason.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    ring_deadline = models.DateTimeField()
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    # {callee device id: b64u boxed offer}, and the boxed answer: kept only while they
    # may still be needed (a device that connects while it rings), erased at the end.
    offers = models.JSONField(default=dict, blank=True)
    answer = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["caller", "-created_at"], name="call_caller_idx"),
            models.Index(fields=["callee", "-created_at"], name="call_callee_idx"),
            models.Index(
                fields=["state", "ring_deadline"],
                name="call_live_idx",
                condition=Q(state__in=["ringing", "active"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(caller=models.F("callee")), name="call_not_to_self"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_media_display()} call {self.pk} ({self.state})"

    @property
    def duration(self) -> int | None:
        """Whole seconds between answer and end, for a call that was answered."""
        if self.answered_at is None or self.ended_at is None:
            return None
        return max(0, int((self.ended_at - self.answered_at).total_seconds()))

    def is_ringing_now(self) -> bool:
        """Ringing and before its deadline: a call past it reads as missed everywhere."""
        return self.state == self.State.RINGING and self.ring_deadline > timezone.now()
