"""The panel's permission matrix: for each role, what each page answers and what each
action does, checked in the database (docs/moderation.md, moderation/roles.py).

Roles: ``anonymous``, ``regular`` (signed in, not staff), ``moderator``,
``staff_admin`` and, for the pages and what only it may do, ``superuser``.
Every test starts from fresh data, so a refused action is compared with a database
nobody else touched: a snapshot of everything an action could change is taken before
the request and compared after it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Any

import pytest
from django.utils import timezone

from accounts import services as account_services
from accounts.models import User
from accounts.tests.factories import PASSWORD, make_user
from messaging.models import Report
from moderation.models import AccountWarning, ModerationAction
from moderation.tests.support import MODERATORS, STAFF_ADMINS, panel, reported_conversation, staff

pytestmark = pytest.mark.django_db

Kind = ModerationAction.Kind
OPEN, RESOLVED = Report.Status.OPEN, Report.Status.RESOLVED

BIO = "Cheap watches, DM me"
NOTE = "Insults are not allowed here."
REASON = "Per the rules."

SIGNED_OUT = ("anonymous", "regular")
STAFF_ROLES = ("moderator", "staff_admin")


class World:
    """Fresh data for one test, made on first use (a test pays only for what it needs).
    ``alice`` wrote the reported message; ``carol`` is a regular user, a candidate for
    a role."""

    def __init__(self) -> None:
        self.until = (timezone.now() + timedelta(days=7)).replace(second=0, microsecond=0)

    @cached_property
    def _conversation(self) -> tuple[User, Report]:
        alice, _bob, report = reported_conversation(["you are an idiot"], 0)
        account_services.user_update_profile(user=alice.user, bio=BIO)
        return User.objects.get(pk=alice.user.pk), report

    @property
    def alice(self) -> User:
        return self._conversation[0]

    @property
    def report(self) -> Report:
        return self._conversation[1]

    @cached_property
    def carol(self) -> User:
        return make_user()

    @cached_property
    def regular(self) -> User:
        return make_user()

    @cached_property
    def moderator(self) -> User:
        return staff(MODERATORS)

    @cached_property
    def other_moderator(self) -> User:
        return staff(MODERATORS)

    @cached_property
    def staff_admin(self) -> User:
        return staff(STAFF_ADMINS)

    @cached_property
    def superuser(self) -> User:
        return User.objects.create_superuser("root", "root@example.com", PASSWORD)

    @cached_property
    def entry(self) -> ModerationAction:
        """An audit log entry: the other moderator's appointment."""
        return ModerationAction.objects.get(target=self.other_moderator, kind=Kind.GRANT_ROLE)

    def actor(self, role: str) -> User | None:
        return None if role == "anonymous" else self.user(role)

    def user(self, name: str) -> User:
        found = getattr(self, name)
        assert isinstance(found, User)
        return found


@pytest.fixture
def world() -> World:
    return World()


def login_redirect(path: str) -> str:
    return f"/admin/login/?next={path}"


@dataclass(frozen=True)
class Snapshot:
    """Everything a panel action could change."""

    audit: tuple[tuple[Any, ...], ...]
    warnings: tuple[tuple[Any, ...], ...]
    reports: tuple[tuple[Any, ...], ...]
    users: tuple[tuple[Any, ...], ...]
    groups: tuple[tuple[Any, ...], ...]

    @classmethod
    def take(cls) -> "Snapshot":
        return cls(
            audit=tuple(ModerationAction.objects.order_by("pk").values_list("pk", "kind")),
            warnings=tuple(AccountWarning.objects.order_by("pk").values_list("pk", "user_id")),
            reports=tuple(
                Report.objects.order_by("pk").values_list(
                    "pk", "status", "assignee_id", "resolved_by_id", "resolution"
                )
            ),
            users=tuple(
                User.objects.order_by("pk").values_list(
                    "pk", "is_active", "suspended_until", "bio", "display_name", "is_staff"
                )
            ),
            groups=tuple(
                User.groups.through.objects.order_by("user_id", "group_id").values_list(
                    "user_id", "group__name"
                )
            ),
        )


def new_audit_rows(before: Snapshot) -> list[tuple[str, Any]]:
    seen = {pk for pk, _ in before.audit}
    return [
        (kind, moderator_id)
        for pk, kind, moderator_id in ModerationAction.objects.order_by("pk").values_list(
            "pk", "kind", "moderator_id"
        )
        if pk not in seen
    ]


# --- Pages ------------------------------------------------------------------------------------

PAGES: dict[str, Callable[[World], str]] = {
    "report queue": lambda w: "/admin/messaging/report/",
    "report page": lambda w: f"/admin/messaging/report/{w.report.pk}/change/",
    "user list": lambda w: "/admin/accounts/user/",
    "user page": lambda w: f"/admin/accounts/user/{w.alice.pk}/change/",
    "audit list": lambda w: "/admin/moderation/moderationaction/",
    "audit entry page": lambda w: f"/admin/moderation/moderationaction/{w.entry.pk}/change/",
    "audit entry delete page": lambda w: f"/admin/moderation/moderationaction/{w.entry.pk}/delete/",
    "dashboard": lambda w: "/admin/dashboard/",
    "devices": lambda w: "/admin/accounts/device/",
    "API tokens": lambda w: "/admin/accounts/apitoken/",
    "calls": lambda w: "/admin/calls/call/",
    "deliveries": lambda w: "/admin/notifications/delivery/",
    "security events": lambda w: "/admin/accounts/securityevent/",
    "groups (unregistered)": lambda w: "/admin/auth/group/",
}

# What a GET answers, for the roles that may enter the panel. Anonymous and regular users
# are sent to the login page from every one of them.
PAGE_STATUS: dict[str, tuple[int, int, int]] = {
    #                          moderator  staff_admin  superuser
    "report queue":            (200,      200,         200),
    "report page":             (200,      200,         200),
    "user list":               (200,      200,         200),
    "user page":               (200,      200,         200),
    "audit list":              (200,      200,         200),
    "audit entry page":        (200,      200,         200),
    "audit entry delete page": (403,      403,         403),
    "dashboard":               (200,      200,         200),
    "devices":                 (403,      200,         200),
    "API tokens":              (403,      200,         200),
    "calls":                   (403,      200,         200),
    "deliveries":              (403,      200,         200),
    "security events":         (403,      200,         200),
    "groups (unregistered)":   (404,      404,         404),
}  # fmt: skip

PAGE_ROWS = [
    *((role, page, 302) for page in PAGES for role in SIGNED_OUT),
    *(
        (role, page, status)
        for page, statuses in PAGE_STATUS.items()
        for role, status in zip(("moderator", "staff_admin", "superuser"), statuses, strict=True)
    ),
]


@pytest.mark.parametrize(("role", "page", "status"), PAGE_ROWS, ids=lambda v: str(v))
def test_page(world: World, role: str, page: str, status: int) -> None:
    path = PAGES[page](world)
    response = panel(world.actor(role)).get(path)
    assert response.status_code == status
    if status == 302:
        assert response["Location"] == login_redirect(path)


# --- Actions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    path: Callable[[World], str]
    data: Callable[[World], dict[str, Any]]
    back: Callable[[World], str]  # where a done action redirects to
    effect: Callable[[World, User], None]  # what a done action changed, checked in the database
    audit: str | None  # the audit log row a done action writes
    prepare: Callable[[World], None] = lambda w: None
    method: str = "post"


def report_url(suffix: str) -> Callable[[World], str]:
    return lambda w: f"/admin/messaging/report/{w.report.pk}/{suffix}"


def user_url(suffix: str, target: str = "alice") -> Callable[[World], str]:
    return lambda w: f"/admin/accounts/user/{w.user(target).pk}/{suffix}"


def form(kind: str) -> Callable[[World], dict[str, Any]]:
    def data(w: World) -> dict[str, Any]:
        fields: dict[str, Any] = {"action": kind, "reason": REASON}
        if kind == Kind.WARN:
            fields["note"] = NOTE
        if kind == Kind.SUSPEND:
            fields["until"] = w.until.strftime("%Y-%m-%dT%H:%M")
        if kind == Kind.REMOVE_FIELD:
            fields.setdefault("field", "bio")
        return fields

    return data


def role_form(role: str) -> Callable[[World], dict[str, Any]]:
    return lambda w: {"role": role, "grant": "1", "reason": "Joins the team."}


def reloaded(user: User) -> User:
    return User.objects.get(pk=user.pk)


def assigned_to_actor(w: World, actor: User) -> None:
    report = Report.objects.get(pk=w.report.pk)
    assert (report.status, report.assignee_id) == (OPEN, actor.pk)


def warned(w: World) -> None:
    assert list(AccountWarning.objects.filter(user=w.alice).values_list("text", flat=True)) == [
        NOTE
    ]


def suspended(target: str = "alice") -> Callable[[World], None]:
    def check(w: World) -> None:
        user = reloaded(w.user(target))
        assert (user.is_active, user.suspended_until) == (True, w.until)

    return check


def bio_removed(w: World) -> None:
    assert reloaded(w.alice).bio == ""


def banned(w: World) -> None:
    assert reloaded(w.alice).is_active is False


def restored(w: World) -> None:
    user = reloaded(w.alice)
    assert (user.is_active, user.suspended_until) == (True, None)


def resolved(
    kind: str, then: Callable[[World], None] | None = None
) -> Callable[[World, User], None]:
    def check(w: World, actor: User) -> None:
        report = Report.objects.get(pk=w.report.pk)
        assert (report.status, report.resolution, report.resolved_by_id) == (
            RESOLVED, kind, actor.pk,
        )  # fmt: skip
        if then is not None:
            then(w)

    return check


def on_user(check: Callable[[World], None]) -> Callable[[World, User], None]:
    def effect(w: World, actor: User) -> None:
        check(w)
        # An action from the user's page resolves no report.
        assert Report.objects.get(pk=w.report.pk).status == OPEN

    return effect


def in_group(role: str) -> Callable[[World, User], None]:
    def check(w: World, actor: User) -> None:
        carol = reloaded(w.carol)
        assert carol.is_staff
        assert list(carol.groups.values_list("name", flat=True)) == [role]

    return check


def suspend_alice(w: World) -> None:
    account_services.user_suspend(user=w.alice, until=w.until)


def nothing(w: World, actor: User) -> None:
    raise AssertionError("this action is never done")


ACTIONS: dict[str, Action] = {
    "assign": Action(
        report_url("assign/"), lambda w: {}, report_url("change/"), assigned_to_actor, Kind.ASSIGN
    ),
    "assign_to_me (bulk)": Action(
        lambda w: "/admin/messaging/report/",
        lambda w: {"action": "assign_to_me", "_selected_action": [str(w.report.pk)]},
        lambda w: "/admin/messaging/report/",
        assigned_to_actor,
        Kind.ASSIGN,
    ),
    "resolve: dismiss": Action(
        report_url("resolve/"), form(Kind.DISMISS), report_url("change/"),
        resolved(Kind.DISMISS), Kind.DISMISS,
    ),
    "resolve: warn": Action(
        report_url("resolve/"), form(Kind.WARN), report_url("change/"),
        resolved(Kind.WARN, warned), Kind.WARN,
    ),
    "resolve: suspend": Action(
        report_url("resolve/"), form(Kind.SUSPEND), report_url("change/"),
        resolved(Kind.SUSPEND, suspended()), Kind.SUSPEND,
    ),
    "resolve: remove_field": Action(
        report_url("resolve/"), form(Kind.REMOVE_FIELD), report_url("change/"),
        resolved(Kind.REMOVE_FIELD, bio_removed), Kind.REMOVE_FIELD,
    ),
    "resolve: ban": Action(
        report_url("resolve/"), form(Kind.BAN), report_url("change/"),
        resolved(Kind.BAN, banned), Kind.BAN,
    ),
    "user: warn": Action(
        user_url("act/"), form(Kind.WARN), user_url("change/"), on_user(warned), Kind.WARN
    ),
    "user: suspend": Action(
        user_url("act/"), form(Kind.SUSPEND), user_url("change/"), on_user(suspended()),
        Kind.SUSPEND,
    ),
    "user: remove_field": Action(
        user_url("act/"), form(Kind.REMOVE_FIELD), user_url("change/"), on_user(bio_removed),
        Kind.REMOVE_FIELD,
    ),
    "user: ban": Action(
        user_url("act/"), form(Kind.BAN), user_url("change/"), on_user(banned), Kind.BAN
    ),
    "user: lift": Action(
        user_url("act/"), form(Kind.LIFT), user_url("change/"), on_user(restored), Kind.LIFT,
        prepare=suspend_alice,
    ),
    "grant Moderators": Action(
        user_url("role/", "carol"), role_form(MODERATORS), user_url("change/", "carol"),
        in_group(MODERATORS), Kind.GRANT_ROLE,
    ),
    "grant Staff admins": Action(
        user_url("role/", "carol"), role_form(STAFF_ADMINS), user_url("change/", "carol"),
        in_group(STAFF_ADMINS), Kind.GRANT_ROLE,
    ),
    "audit entry: POST change": Action(
        lambda w: f"/admin/moderation/moderationaction/{w.entry.pk}/change/",
        lambda w: {"reason": "rewritten", "kind": Kind.BAN},
        lambda w: "", nothing, None,
    ),
    "audit entry: GET delete": Action(
        lambda w: f"/admin/moderation/moderationaction/{w.entry.pk}/delete/",
        lambda w: {}, lambda w: "", nothing, None, method="get",
    ),
    "audit entry: POST delete": Action(
        lambda w: f"/admin/moderation/moderationaction/{w.entry.pk}/delete/",
        lambda w: {"post": "yes"}, lambda w: "", nothing, None,
    ),
    "reports: delete_selected": Action(
        lambda w: "/admin/messaging/report/",
        lambda w: {
            "action": "delete_selected", "_selected_action": [str(w.report.pk)], "post": "yes",
        },
        lambda w: "", nothing, None,
    ),
}  # fmt: skip

DONE, REFUSED, NOT_OFFERED = "done", "refused (403)", "not offered"

# What each staff role gets. Anonymous and regular users get the login page for all of them.
ACTION_OUTCOMES: dict[str, tuple[str, str]] = {
    #                             moderator     staff_admin
    "assign":                     (DONE,        DONE),
    "assign_to_me (bulk)":        (DONE,        DONE),
    "resolve: dismiss":           (DONE,        DONE),
    "resolve: warn":              (DONE,        DONE),
    "resolve: suspend":           (DONE,        DONE),
    "resolve: remove_field":      (DONE,        DONE),
    "resolve: ban":               (REFUSED,     DONE),
    "user: warn":                 (DONE,        DONE),
    "user: suspend":              (DONE,        DONE),
    "user: remove_field":         (DONE,        DONE),
    "user: ban":                  (REFUSED,     DONE),
    "user: lift":                 (REFUSED,     DONE),
    "grant Moderators":           (REFUSED,     DONE),
    "grant Staff admins":         (REFUSED,     REFUSED),
    "audit entry: POST change":   (REFUSED,     REFUSED),
    "audit entry: GET delete":    (REFUSED,     REFUSED),
    "audit entry: POST delete":   (REFUSED,     REFUSED),
    "reports: delete_selected":   (NOT_OFFERED, NOT_OFFERED),
}  # fmt: skip

# Only a superuser appoints staff admins; the audit log is append-only even for it.
SUPERUSER_OUTCOMES = {
    "grant Staff admins": DONE,
    "audit entry: POST change": REFUSED,
    "audit entry: GET delete": REFUSED,
    "audit entry: POST delete": REFUSED,
    "reports: delete_selected": NOT_OFFERED,
}

ACTION_ROWS = [
    *((role, action, "login") for action in ACTIONS for role in SIGNED_OUT),
    *(
        (role, action, outcome)
        for action, outcomes in ACTION_OUTCOMES.items()
        for role, outcome in zip(STAFF_ROLES, outcomes, strict=True)
    ),
    *(("superuser", action, outcome) for action, outcome in SUPERUSER_OUTCOMES.items()),
]


@pytest.mark.parametrize(("role", "action", "outcome"), ACTION_ROWS, ids=lambda v: str(v))
def test_action(world: World, role: str, action: str, outcome: str) -> None:
    spec = ACTIONS[action]
    spec.prepare(world)
    actor = world.actor(role)
    path, data, client = spec.path(world), spec.data(world), panel(actor)
    before = Snapshot.take()

    response = client.get(path) if spec.method == "get" else client.post(path, data)

    if outcome == DONE:
        assert actor is not None
        assert response.status_code == 302, response.content[:2000]
        assert response["Location"] == spec.back(world)
        spec.effect(world, actor)
        assert new_audit_rows(before) == [(spec.audit, actor.pk)]
        return
    # Refused in one way or another: nothing at all changed.
    assert Snapshot.take() == before
    if outcome == "login":
        assert response.status_code == 302
        assert response["Location"] == login_redirect(path)
    elif outcome == REFUSED:
        assert response.status_code == 403
    else:  # NOT_OFFERED: the admin says "No action selected" and shows the queue again
        assert response.status_code == 302
        assert response["Location"] == path
        assert Report.objects.filter(pk=world.report.pk).exists()


# --- E-mail addresses: for staff admins only ----------------------------------------------------


@pytest.mark.parametrize(("role", "shown"), [("moderator", False), ("staff_admin", True)])
def test_email_address(world: World, role: str, shown: bool) -> None:
    client = panel(world.actor(role))
    page = client.get(f"/admin/accounts/user/{world.alice.pk}/change/")
    found = client.get("/admin/accounts/user/", {"q": world.alice.email})

    assert page.status_code == found.status_code == 200
    assert (world.alice.email in page.content.decode()) is shown
    # Searching by address would tell a moderator whose address it is.
    assert (f"/admin/accounts/user/{world.alice.pk}/change/" in found.content.decode()) is shown


# --- Reach: whom an action may touch ---------------------------------------------------------

REACH_ROWS = [
    # actor         target             action        status
    ("moderator",   "other_moderator", Kind.SUSPEND, 403),
    ("moderator",   "other_moderator", Kind.WARN,    403),
    ("moderator",   "moderator",       Kind.SUSPEND, 403),
    ("moderator",   "superuser",       Kind.WARN,    403),
    ("staff_admin", "other_moderator", Kind.SUSPEND, 302),
    ("staff_admin", "staff_admin",     Kind.SUSPEND, 403),
    ("staff_admin", "superuser",       Kind.SUSPEND, 403),
]  # fmt: skip


@pytest.mark.parametrize(("role", "target", "kind", "status"), REACH_ROWS, ids=lambda v: str(v))
def test_reach(world: World, role: str, target: str, kind: str, status: int) -> None:
    actor = world.actor(role)
    assert actor is not None
    path, data, client = user_url("act/", target)(world), form(kind)(world), panel(actor)
    before = Snapshot.take()

    response = client.post(path, data)

    assert response.status_code == status
    if status == 403:
        assert Snapshot.take() == before
    else:
        assert response["Location"] == user_url("change/", target)(world)
        suspended(target)(world)
        assert new_audit_rows(before) == [(kind, actor.pk)]
