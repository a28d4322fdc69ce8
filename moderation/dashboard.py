"""The panel's dashboard: open reports by age and five activity series, drawn as
server-rendered SVG bar charts (no script, no inline style: the CSP is strict).

Metadata only: every read here is a count. Each series is one aggregate query, so
the page costs the same number of queries whatever the size of the tables.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.db.models import BigIntegerField, Count, F, Model, Q, Value
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from accounts.models import User
from calls.models import Call
from messaging.models import Message, Report
from moderation.models import ModerationAction
from moderation.selectors import REPORT_AGES

DAYS = 30
DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)

# SVG geometry, in viewBox units (the stylesheet scales the drawing to its column).
PLOT_HEIGHT = 120
LABEL_SPACE = 24  # under the plot, for the bucket names of the age chart
DAY_SLOT = 20
BUCKET_SLOT = 100


@dataclass(frozen=True)
class Point:
    """One bar's worth of data: a label and a count."""

    label: str
    count: int


@dataclass(frozen=True)
class Bar:
    """Where one bar goes in the SVG (y grows downwards, 0 is the top of the plot)."""

    label: str
    count: int
    x: int
    y: int
    width: int
    height: int
    center: int


@dataclass(frozen=True)
class Chart:
    """One chart of the page: its data (for the table) and its bars (for the SVG)."""

    slug: str
    title: str
    description: str
    points: list[Point]
    bars: list[Bar]
    width: int
    height: int
    plot_height: int
    labelled: bool  # bucket names drawn under the bars (a daily chart has too many)

    @property
    def total(self) -> int:
        return sum(point.count for point in self.points)

    @property
    def label_y(self) -> int:
        # The text's baseline: under the plot, room left for the letters' descent.
        return self.plot_height + LABEL_SPACE - 6


# --- Reads ------------------------------------------------------------------------------------


def open_reports_by_age(*, now: datetime) -> list[Point]:
    """Open reports in four age buckets, counted in one query."""
    counts = Report.objects.filter(status=Report.Status.OPEN).aggregate(
        **{age.key: Count("pk", filter=age.q(now)) for age in REPORT_AGES}
    )
    return [Point(age.label, counts[age.key]) for age in REPORT_AGES]


def last_days(*, now: datetime, days: int = DAYS) -> list[date]:
    """The UTC days of the window, oldest first, today last."""
    today = now.astimezone(UTC).date()
    return [today - timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _window(days: list[date]) -> tuple[datetime, datetime]:
    start = datetime.combine(days[0], time.min, tzinfo=UTC)
    return start, start + timedelta(days=len(days))


def _filled(days: list[date], counted: Iterable[tuple[date, int]]) -> list[Point]:
    # Days without a row are zero: the database returns only days that had something.
    by_day = dict(counted)
    return [Point(day.isoformat(), by_day.get(day, 0)) for day in days]


def _per_day(
    model: type[Model], field: str, days: list[date], exclude: Q | None = None
) -> list[Point]:
    """Rows per UTC day of a datetime ``field``, in one GROUP BY query."""
    start, end = _window(days)
    rows = model._default_manager.filter(**{f"{field}__gte": start, f"{field}__lt": end})
    if exclude is not None:
        rows = rows.exclude(exclude)
    # tzinfo=UTC: the day of a row is its UTC day whatever timezone is active.
    counted = (
        rows.order_by()
        .annotate(day=TruncDate(F(field), tzinfo=UTC))
        .values("day")
        .annotate(n=Count("pk"))
        .values_list("day", "n")
    )
    return _filled(days, counted)


def actions_per_day(*, now: datetime) -> list[Point]:
    """Moderation actions per day; assigning a report is bookkeeping, not counted."""
    return _per_day(
        ModerationAction, "created_at", last_days(now=now), Q(kind=ModerationAction.Kind.ASSIGN)
    )


def signups_per_day(*, now: datetime) -> list[Point]:
    return _per_day(User, "date_joined", last_days(now=now))


def calls_per_day(*, now: datetime) -> list[Point]:
    return _per_day(Call, "created_at", last_days(now=now))


def messages_per_day(*, now: datetime) -> list[Point]:
    """Messages per day. ``server_ts`` is Unix milliseconds: the day number is an
    integer division done by the database (the same on SQLite and PostgreSQL).
    Messages are erased, never deleted, so every message sent is still a row."""
    days = last_days(now=now)
    start, end = _window(days)
    counted = (
        Message.objects.filter(
            server_ts__gte=int(start.timestamp() * 1000), server_ts__lt=int(end.timestamp() * 1000)
        )
        .order_by()
        .annotate(
            epoch_day=F("server_ts") / Value(DAY_MS, output_field=BigIntegerField()),
        )
        .values("epoch_day")
        .annotate(n=Count("pk"))
        .values_list("epoch_day", "n")
    )
    return _filled(days, ((EPOCH + timedelta(days=int(n)), count) for n, count in counted))


# --- Drawing ----------------------------------------------------------------------------------


def bar_geometry(points: Sequence[Point], *, slot: int, height: int, gap: int = 4) -> list[Bar]:
    """Bars side by side, ``slot`` wide each, scaled so the largest count fills
    ``height``. A count above zero is at least 1 high, so it never looks like none."""
    peak = max((point.count for point in points), default=0)
    bars = []
    for index, point in enumerate(points):
        tall = round(point.count * height / peak) if peak else 0
        if point.count and not tall:
            tall = 1
        x = index * slot + gap // 2
        bars.append(
            Bar(
                label=point.label,
                count=point.count,
                x=x,
                y=height - tall,
                width=slot - gap,
                height=tall,
                center=index * slot + slot // 2,
            )
        )
    return bars


def chart(
    slug: str, title: str, description: str, points: list[Point], *, labelled: bool = False
) -> Chart:
    """A chart of ``points``; ``labelled`` for a few named buckets rather than days."""
    slot = BUCKET_SLOT if labelled else DAY_SLOT
    return Chart(
        slug=slug,
        title=title,
        description=description,
        points=points,
        bars=bar_geometry(points, slot=slot, height=PLOT_HEIGHT),
        width=slot * len(points),
        height=PLOT_HEIGHT + (LABEL_SPACE if labelled else 0),
        plot_height=PLOT_HEIGHT,
        labelled=labelled,
    )


def dashboard_charts(*, now: datetime) -> list[Chart]:
    """Every chart of the page: five queries in all."""
    per_day = f"Per UTC day, the last {DAYS} days."
    return [
        chart(
            "reports",
            "Open reports by age",
            "Reports waiting for a moderator, by how long they have waited.",
            open_reports_by_age(now=now),
            labelled=True,
        ),
        chart(
            "actions",
            "Moderation actions",
            f"{per_day} Assigning a report is not counted.",
            actions_per_day(now=now),
        ),
        chart("signups", "Sign-ups", per_day, signups_per_day(now=now)),
        chart("messages", "Messages", per_day, messages_per_day(now=now)),
        chart("calls", "Calls", per_day, calls_per_day(now=now)),
    ]


# --- The page ---------------------------------------------------------------------------------


def dashboard_response(site: AdminSite, request: HttpRequest) -> HttpResponse:
    """The dashboard page, for holders of ``moderation.view_dashboard`` (the site's
    ``admin_view`` has already sent anyone who is not active staff to the login)."""
    if not request.user.has_perm("moderation.view_dashboard"):
        raise PermissionDenied
    now = timezone.now()
    context = {
        **site.each_context(request),
        "title": "Dashboard",
        "charts": dashboard_charts(now=now),
        "now": now,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)
