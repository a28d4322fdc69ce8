"""The moderation dashboard: who may see it, what it counts (a known data set, days
with nothing included), that its cost does not grow with the data, and that it shows
counts only."""

import html
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models import F
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import make_user
from calls.models import Call
from calls.tests.support import make_call
from messaging import services as messaging_services
from messaging.models import Message, Report
from messaging.tests.support import Person, envelope, person
from moderation import dashboard
from moderation.dashboard import PLOT_HEIGHT, Point, bar_geometry
from moderation.models import ModerationAction
from moderation.roles import MODERATORS, STAFF_ADMINS
from moderation.services import ActionInput, report_assign, report_resolve, user_moderate

pytestmark = pytest.mark.django_db

Kind = ModerationAction.Kind
DAY_MS = 86_400_000
# In a handle and in a reported message's content: neither may reach the page.
MARKER = "zqxmarker"
BUCKETS = ("< 1 hour", "1\N{EN DASH}24 hours", "1\N{EN DASH}7 days", "> 7 days")


def url() -> str:
    return reverse("admin:dashboard")


def staff(role: str | None = None) -> User:
    """A staff account, in ``role``'s group (moderation.roles) if one is given."""
    user = make_user()
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.HandleOrEmailBackend")
    return client


def utc_day(days_ago: int = 0) -> str:
    return (timezone.now() - timedelta(days=days_ago)).astimezone(UTC).date().isoformat()


def window() -> list[str]:
    """The 30 days the daily charts cover, oldest first."""
    return [utc_day(days_ago) for days_ago in range(29, -1, -1)]


def table(page: str, slug: str) -> list[tuple[str, int]]:
    """The (label, count) rows of a chart's table of numbers, as rendered."""
    found = re.search(rf'<table id="chart-{slug}-data">(.*?)</table>', page, re.DOTALL)
    assert found, f"no table of numbers for {slug}"
    rows = re.findall(r'<tr><th scope="row">([^<]*)</th><td>(\d+)</td></tr>', found.group(1))
    return [(html.unescape(label), int(count)) for label, count in rows]


def buckets(*counts: int) -> list[tuple[str, int]]:
    """The rows of the open reports chart, youngest first."""
    return list(zip(BUCKETS, counts, strict=True))


def per_day(expected: dict[str, int]) -> list[tuple[str, int]]:
    return [(day, expected.get(day, 0)) for day in window()]


def direct(alice: Person, bob: Person) -> str:
    account_services.user_follow(follower=bob.user, followee=alice.user)  # no request
    response = alice.phones[0].api.post(
        "/api/v1/conversations", {"kind": "direct", "handle": bob.user.handle}, format="json"
    )
    assert response.status_code in (200, 201), response.content
    return response.json()["id"]


def send(
    sender: Person, conversation_id: str, recipients: list[Person], body: str = "hi"
) -> tuple[Message, dict[str, bytes]]:
    payload = {"type": "text", "body": body, "sent_at": 1763660000, "reply_to": None,
               "attachments": []}  # fmt: skip
    sent, secrets = envelope(
        sender=sender.phones[0],
        conversation_id=conversation_id,
        recipients=recipients,
        payload=payload,
    )
    response = sender.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", sent, format="json"
    )
    assert response.status_code == 201, response.content
    return Message.objects.get(pk=response.json()["id"]), secrets


def move_message(message: Message, days: int) -> None:
    Message.objects.filter(pk=message.pk).update(server_ts=F("server_ts") - days * DAY_MS)


def move_report(report: Report, age: timedelta) -> None:
    Report.objects.filter(pk=report.pk).update(created_at=timezone.now() - age)


def past_action(moderator: User, target: User, age: timedelta) -> ModerationAction:
    # The audit log refuses updates: an earlier action is written with its date.
    return ModerationAction.objects.create(
        moderator=moderator, moderator_handle=moderator.handle, target=target,
        target_handle=target.handle, kind=Kind.WARN, reason="An earlier warning.",
        created_at=timezone.now() - age,
    )  # fmt: skip


@pytest.fixture
def moderator() -> User:
    return staff(MODERATORS)


@dataclass
class World:
    alice: Person
    bob: Person


@pytest.fixture
def world(moderator: User) -> World:
    """A known data set; each comment says what the dashboard must count."""
    alice, bob = person("alice"), person(f"{MARKER}bob")
    carol, dave = make_user("carol"), make_user("dave", display_name=f"{MARKER} Dave")
    conversation_id = direct(alice, bob)

    # Messages: today 1, three days ago 2; forty days ago is outside the window.
    reported, secrets = send(alice, conversation_id, [alice, bob], body=f"{MARKER} secret body")
    for sender, days in ((alice, 3), (bob, 3), (bob, 40)):
        message, _ = send(sender, conversation_id, [alice, bob])
        move_message(message, days)

    # Open reports: < 1 hour 2, 1-24 hours 1, 1-7 days 0, > 7 days 1.
    messaging_services.report_message(
        reporter=bob.user, message_id=reported.pk, payload=secrets["payload"],
        franking_key=secrets["fk"], franking_stamp_claimed=None, reason="harassment",
    )  # fmt: skip
    messaging_services.report_profile(reporter=carol, reported=alice.user, reason="spam")
    old = messaging_services.report_profile(reporter=dave, reported=alice.user, reason="spam")
    move_report(old, timedelta(days=10))
    recent = messaging_services.report_profile(reporter=carol, reported=bob.user, reason="spam")
    move_report(recent, timedelta(hours=3))
    # Resolved, so in no bucket (it would be in 1-7 days).
    handled = messaging_services.report_profile(reporter=dave, reported=bob.user, reason="other")
    move_report(handled, timedelta(days=2))

    # Actions: today 2 (the assignment is not counted), five days ago 1.
    report_assign(moderator=moderator, report_id=handled.pk)
    report_resolve(
        moderator=moderator, report_id=handled.pk,
        action=ActionInput(kind=Kind.DISMISS, reason="Not against the rules."),
    )  # fmt: skip
    user_moderate(
        moderator=moderator, user_id=carol.pk,
        action=ActionInput(kind=Kind.WARN, reason="Rude replies.", note="Please be kind."),
    )  # fmt: skip
    past_action(moderator, dave, timedelta(days=5))
    past_action(moderator, dave, timedelta(days=35))

    # Sign-ups: today 3 (the moderator, alice, bob), two days ago 1; dave is too old.
    User.objects.filter(pk=carol.pk).update(date_joined=timezone.now() - timedelta(days=2))
    User.objects.filter(pk=dave.pk).update(date_joined=timezone.now() - timedelta(days=45))

    # Calls: today 1, yesterday 2.
    make_call(alice, bob, Call.State.ENDED)
    for _ in range(2):
        make_call(bob, alice, Call.State.ENDED, created_at=timezone.now() - timedelta(days=1))
    return World(alice, bob)


# --- Who may see it --------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_panel_login(client: Client) -> None:
    response = client.get(url())

    assert response.status_code == 302
    assert response["Location"].startswith(f"{reverse('admin:login')}?next=")
    assert url() in html.unescape(response["Location"])


def test_a_signed_in_user_who_is_not_staff_is_sent_to_the_panel_login() -> None:
    response = signed_in(make_user()).get(url())

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_the_permission_is_refused() -> None:
    response = signed_in(staff()).get(url())

    assert response.status_code == 403


@pytest.mark.parametrize("role", [MODERATORS, STAFF_ADMINS])
def test_moderators_and_staff_admins_see_it(role: str) -> None:
    response = signed_in(staff(role)).get(url())

    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>Dashboard</h1>" in page
    assert re.search(
        r'<div class="breadcrumbs">\s*<a href="/admin/">Home</a>\s*&rsaquo; Dashboard', page
    )
    assert '<link rel="stylesheet" href="/static/css/dashboard.css">' in page


def test_the_panel_index_links_to_it_for_those_who_may_see_it(moderator: User) -> None:
    response = signed_in(moderator).get(reverse("admin:index"))

    assert response.status_code == 200
    page = response.content.decode()
    assert f'<a href="{url()}">Dashboard</a>' in page
    # Django's app list is still there.
    assert response.context["app_list"]
    for app in response.context["app_list"]:
        assert f'href="{app["app_url"]}"' in page


def test_the_panel_index_has_no_link_for_staff_without_the_permission() -> None:
    response = signed_in(staff()).get(reverse("admin:index"))

    assert response.status_code == 200
    assert url() not in response.content.decode()


# --- What it counts --------------------------------------------------------------------------


def test_counts_of_a_known_data_set_with_every_day_shown(moderator: User, world: World) -> None:
    page = signed_in(moderator).get(url()).content.decode()

    assert table(page, "reports") == buckets(2, 1, 0, 1)
    assert table(page, "actions") == per_day({utc_day(0): 2, utc_day(5): 1})
    assert table(page, "signups") == per_day({utc_day(0): 3, utc_day(2): 1})
    assert table(page, "messages") == per_day({utc_day(0): 1, utc_day(3): 2})
    assert table(page, "calls") == per_day({utc_day(0): 1, utc_day(1): 2})


def test_the_charts_are_svg_bars_scaled_to_the_counts(moderator: User, world: World) -> None:
    page = signed_in(moderator).get(url()).content.decode()

    assert page.count('<rect class="chart-bar"') == 4 + 4 * 30
    reports = re.search(r'<section class="dashboard-chart" id="chart-reports".*?</svg>', page, re.S)
    assert reports
    bars = re.findall(
        r'<rect class="chart-bar"[^>]* height="(\d+)"><title>([^<]*)</title>', reports.group(0)
    )
    assert [(html.unescape(title), int(height)) for height, title in bars] == [
        (f"{label}: {count}", height)
        for (label, count), height in zip(
            buckets(2, 1, 0, 1), [PLOT_HEIGHT, PLOT_HEIGHT // 2, 0, PLOT_HEIGHT // 2], strict=True
        )
    ]
    assert "&lt; 1 hour: 2</text>" in reports.group(0)


def test_an_empty_site_shows_thirty_zero_days(moderator: User) -> None:
    page = signed_in(moderator).get(url()).content.decode()

    assert table(page, "reports") == buckets(0, 0, 0, 0)
    assert table(page, "actions") == per_day({})
    assert table(page, "signups") == per_day({utc_day(0): 1})  # the moderator
    assert table(page, "messages") == per_day({})
    assert table(page, "calls") == per_day({})


def test_days_are_utc_days_split_at_midnight_whatever_the_active_timezone() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    now = timezone.now()
    midnight = datetime.combine(now.astimezone(UTC).date(), time.min, tzinfo=UTC)
    just_before = midnight - timedelta(milliseconds=1)
    for at in (midnight, just_before):
        message, _ = send(alice, conversation_id, [alice, bob])
        Message.objects.filter(pk=message.pk).update(server_ts=int(at.timestamp() * 1000))
        make_call(alice, bob, Call.State.ENDED, created_at=at)

    with timezone.override("Pacific/Auckland"):  # ahead of UTC: would move both days
        messages = dashboard.messages_per_day(now=now)
        calls = dashboard.calls_per_day(now=now)

    yesterday, today = (midnight - timedelta(days=1)).date(), midnight.date()
    expected = [Point(yesterday.isoformat(), 1), Point(today.isoformat(), 1)]
    assert messages[-2:] == expected
    assert calls[-2:] == expected
    assert sum(point.count for point in messages) == sum(point.count for point in calls) == 2


def test_the_window_is_thirty_days_ending_today() -> None:
    days = dashboard.last_days(now=datetime(2025, 3, 1, 23, 59, tzinfo=UTC))

    assert len(days) == 30
    assert days[0] == date(2025, 1, 31)
    assert days[-1] == date(2025, 3, 1)


# --- What it costs ---------------------------------------------------------------------------


def test_each_chart_is_one_query(moderator: User, world: World, django_assert_num_queries) -> None:
    with django_assert_num_queries(5):
        dashboard.dashboard_charts(now=timezone.now())


def test_the_page_runs_the_same_queries_whatever_the_data(moderator: User) -> None:
    client = signed_in(moderator)
    client.get(url())  # anything cached on first use is cached now
    with CaptureQueriesContext(connection) as empty:
        assert client.get(url()).status_code == 200

    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    for days in range(6):
        message, _ = send(alice, conversation_id, [alice, bob])
        move_message(message, days * 4)
        make_call(alice, bob, Call.State.ENDED, created_at=timezone.now() - timedelta(days=days))
        past_action(moderator, alice.user, timedelta(days=days * 3))
        reporter = make_user()
        User.objects.filter(pk=reporter.pk).update(
            date_joined=timezone.now() - timedelta(days=days * 5)
        )
        report = messaging_services.report_profile(
            reporter=reporter, reported=bob.user, reason="spam"
        )
        move_report(report, timedelta(hours=days * 30))
    with CaptureQueriesContext(connection) as full:
        assert client.get(url()).status_code == 200

    assert len(full.captured_queries) == len(empty.captured_queries)


# --- What it never shows ---------------------------------------------------------------------


def test_the_page_shows_counts_only(moderator: User, world: World) -> None:
    assert Report.objects.filter(content__contains=f"{MARKER} secret body").exists()

    page = signed_in(moderator).get(url()).content.decode()

    assert MARKER not in page.lower()
    for someone in (world.alice, world.bob):
        assert str(someone.user.pk) not in page


def test_the_page_has_no_inline_style_and_no_script_of_its_own(moderator: User) -> None:
    response = signed_in(moderator).get(url())
    page = response.content.decode()

    assert "style-src 'self'" in response["Content-Security-Policy"]
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    content = page[page.index('<div id="content"') :]
    assert "<script" not in content


# --- The drawing -----------------------------------------------------------------------------


def test_bars_are_scaled_to_the_largest_count() -> None:
    bars = bar_geometry([Point("a", 0), Point("b", 5), Point("c", 10)], slot=20, height=100, gap=4)

    assert [(bar.x, bar.width, bar.y, bar.height) for bar in bars] == [
        (2, 16, 100, 0), (22, 16, 50, 50), (42, 16, 0, 100),
    ]  # fmt: skip
    assert [bar.center for bar in bars] == [10, 30, 50]
    assert [(bar.label, bar.count) for bar in bars] == [("a", 0), ("b", 5), ("c", 10)]


def test_a_small_count_still_shows_and_nothing_draws_nothing() -> None:
    small = bar_geometry([Point("a", 1), Point("b", 10_000)], slot=10, height=100)
    empty = bar_geometry([Point("a", 0), Point("b", 0)], slot=10, height=100)

    assert [bar.height for bar in small] == [1, 100]
    assert [bar.height for bar in empty] == [0, 0]
    assert bar_geometry([], slot=10, height=100) == []
