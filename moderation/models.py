"""The moderation audit log and the warnings users see. docs/moderation.md.

The audit log is append-only: a row is written once, by a service, in the same
transaction as the action it records. The model refuses updates and deletes, its
admin has no change or delete permission (the model has only a ``view`` one), and
the database refuses ``UPDATE`` and ``DELETE`` with a trigger (migration 0002).
"""

from typing import Any, ClassVar, NoReturn

from django.conf import settings
from django.db import models
from django.utils import timezone

from messaging.models import Report


class AuditLogIsAppendOnly(Exception):
    """Raised on any attempt to change or delete an audit log entry."""


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise AuditLogIsAppendOnly("The moderation audit log cannot be changed or deleted.")


class AppendOnlyQuerySet(models.QuerySet["ModerationAction"]):
    update = _refuse
    delete = _refuse
    bulk_update = _refuse
    update_or_create = _refuse
    _raw_delete = _refuse


class ModerationAction(models.Model):
    """One thing a moderator did: who, what, to whom, why, when."""

    class Kind(models.TextChoices):
        ASSIGN = "assign", "Assigned a report"
        DISMISS = "dismiss", "Dismissed a report"
        WARN = "warn", "Warned"
        SUSPEND = "suspend", "Suspended"
        BAN = "ban", "Banned"
        LIFT = "lift", "Lifted a suspension or ban"
        REMOVE_FIELD = "remove_field", "Removed a profile field"
        GRANT_ROLE = "grant_role", "Granted a role"
        REVOKE_ROLE = "revoke_role", "Revoked a role"

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    # Null only for the setup command (``manage.py grant_role``), run by whoever
    # operates the server; the handle columns keep names readable forever.
    moderator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, related_name="+"
    )
    moderator_handle = models.CharField(max_length=32)
    target = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        related_name="moderation_actions",
    )
    target_handle = models.CharField(max_length=32, blank=True)
    report = models.ForeignKey(
        Report, on_delete=models.PROTECT, null=True, blank=True, related_name="actions"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    reason = models.TextField(help_text="Why, in the moderator's words.")
    until = models.DateTimeField(null=True, blank=True, help_text="End of a suspension.")
    # The removed field and its old value, the role granted, the note shown to the user.
    detail = models.JSONField(default=dict, blank=True)

    objects: ClassVar[models.Manager["ModerationAction"]] = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        default_permissions = ("view",)
        permissions = [
            ("handle_report", "Assign and resolve reports"),
            ("warn_user", "Warn users"),
            ("suspend_user", "Suspend users"),
            ("ban_user", "Ban users"),
            ("lift_restriction", "Lift suspensions and bans"),
            ("remove_profile_field", "Remove profile fields"),
            ("manage_roles", "Appoint and remove moderators"),
            ("view_dashboard", "View the moderation dashboard"),
            ("view_email", "See users' e-mail addresses"),
        ]
        indexes = [models.Index(fields=["target", "-created_at"], name="action_target_idx")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(reason=""), name="action_has_reason"),
            models.CheckConstraint(
                condition=~models.Q(kind="suspend") | models.Q(until__isnull=False),
                name="action_suspend_has_until",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.moderator_handle}: {self.get_kind_display()} @{self.target_handle}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            _refuse()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()


class AccountWarning(models.Model):
    """A warning a moderator gave; its owner sees it until they acknowledge it."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="moderation_warnings"
    )
    action = models.OneToOneField(ModerationAction, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=16, choices=Report.Reason.choices, blank=True)
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["user", "created_at"],
                name="warning_unread_idx",
                condition=models.Q(acknowledged_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"warning {self.pk} to {self.user_id}"
