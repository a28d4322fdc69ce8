"""Reads of the moderation panel, and of warnings as their owner sees them.
docs/moderation.md. Metadata only: no selector here returns message content other
than a reported message whose franking proof holds."""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from accounts.models import Device, User
from calls.models import Call
from messaging.models import Membership, Message, Report
from messaging.services import franking_proof_holds
from moderation.models import AccountWarning, ModerationAction

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


# --- The panel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportAge:
    """One age bucket of open reports: the queue's filter and the dashboard's chart."""

    key: str
    label: str
    older_than: timedelta | None
    younger_than: timedelta | None

    def q(self, now: datetime) -> Q:
        condition = Q()
        if self.older_than is not None:
            condition &= Q(created_at__lte=now - self.older_than)
        if self.younger_than is not None:
            condition &= Q(created_at__gt=now - self.younger_than)
        return condition


REPORT_AGES = (
    ReportAge("hour", "< 1 hour", None, timedelta(hours=1)),
    ReportAge("day", "1\N{EN DASH}24 hours", timedelta(hours=1), timedelta(days=1)),
    ReportAge("week", "1\N{EN DASH}7 days", timedelta(days=1), timedelta(days=7)),
    ReportAge("older", "> 7 days", timedelta(days=7), None),
)


def reports_against_count(user_ref: str) -> Coalesce:
    """How many reports name the user at ``OuterRef(user_ref)``: a subquery to annotate
    a list with, so the count costs no query per row."""
    counted = (
        Report.objects.filter(reported_user=OuterRef(user_ref))
        .order_by()
        .values("reported_user")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(counted), 0)


EARLIER_LIMIT = 20


@dataclass(frozen=True)
class UserMetadata:
    """What the panel knows of a user: counts and dates, never content or keys."""

    user: User
    state: str  # active, suspended or banned
    status: str  # the state in words, with the end of a suspension
    conversations: int
    messages_sent: int
    calls: int
    active_devices: int
    reports_against: int
    reports_open_against: int
    reports_filed: int
    reports_filed_dismissed: int
    warnings: int


def user_status(user: User) -> str:
    if not user.is_active:
        return "banned"
    if user.is_suspended and user.suspended_until is not None:
        return f"suspended until {user.suspended_until:%Y-%m-%d %H:%M} UTC"
    return "active"


def user_metadata(*, user: User) -> UserMetadata:
    """A fixed number of count queries, whatever the user's history."""
    reports_against = Report.objects.filter(reported_user=user).aggregate(
        total=Count("id"), open=Count("id", filter=Q(status=Report.Status.OPEN))
    )
    reports_filed = Report.objects.filter(reporter=user).aggregate(
        total=Count("id"), dismissed=Count("id", filter=Q(resolution=ModerationAction.Kind.DISMISS))
    )
    return UserMetadata(
        user=user,
        state="banned" if not user.is_active else "suspended" if user.is_suspended else "active",
        status=user_status(user),
        conversations=Membership.objects.filter(user=user).count(),
        messages_sent=Message.objects.filter(sender=user).count(),
        calls=Call.objects.filter(Q(caller=user) | Q(callee=user)).count(),
        active_devices=Device.objects.filter(user=user, revoked_at__isnull=True).count(),
        reports_against=reports_against["total"],
        reports_open_against=reports_against["open"],
        reports_filed=reports_filed["total"],
        reports_filed_dismissed=reports_filed["dismissed"],
        warnings=AccountWarning.objects.filter(user=user).count(),
    )


def actions_on(*, user: User, limit: int = EARLIER_LIMIT) -> list[ModerationAction]:
    return list(
        ModerationAction.objects.filter(target=user)
        .exclude(kind=ModerationAction.Kind.ASSIGN)
        .select_related("report")
        .order_by("-created_at", "-id")[:limit]
    )


def reports_against(
    *, user: User, exclude: Report | None = None, limit: int = EARLIER_LIMIT
) -> list[Report]:
    reports = Report.objects.filter(reported_user=user).select_related("reporter", "resolved_by")
    if exclude is not None:
        reports = reports.exclude(pk=exclude.pk)
    return list(reports.order_by("-created_at")[:limit])


@dataclass(frozen=True)
class ReportPage:
    report: Report
    # The reported message's text, only while its franking proof holds; else None.
    verified_content: str | None
    reporter: UserMetadata | None
    reported: UserMetadata | None
    earlier_reports: list[Report]
    actions: list[ModerationAction]
    report_actions: list[ModerationAction]


def report_page(*, report: Report) -> ReportPage:
    """Everything the report page shows. Of any conversation, only the reported
    message's content, and only when the proof checks again now."""
    content = report.content if franking_proof_holds(report=report) else None
    reported = report.reported_user
    return ReportPage(
        report=report,
        verified_content=content,
        reporter=user_metadata(user=report.reporter) if report.reporter else None,
        reported=user_metadata(user=reported) if reported else None,
        earlier_reports=reports_against(user=reported, exclude=report) if reported else [],
        actions=actions_on(user=reported) if reported else [],
        report_actions=list(
            ModerationAction.objects.filter(report=report).order_by("created_at", "id")
        ),
    )
