"""Reads of the moderation panel, and of warnings as their owner sees them.
docs/moderation.md. Metadata only: no selector here returns message content other
than a reported message whose franking proof holds."""

from typing import Any

from django.db.models import QuerySet

from accounts.models import User
from moderation.models import AccountWarning

# --- Warnings, as their owner sees them ------------------------------------------------------


def warnings_for(*, user: User, unacknowledged_only: bool = False) -> QuerySet[AccountWarning]:
    warnings = AccountWarning.objects.filter(user=user)
    if unacknowledged_only:
        warnings = warnings.filter(acknowledged_at__isnull=True)
    return warnings.order_by("-created_at")


def warning_fields(warning: AccountWarning) -> dict[str, Any]:
    return {
        "id": warning.pk,
        "reason": warning.reason,
        "text": warning.text,
        "created_at": warning.created_at.isoformat(),
        "acknowledged_at": (
            warning.acknowledged_at.isoformat() if warning.acknowledged_at else None
        ),
    }
