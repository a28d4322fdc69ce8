"""The moderation panel: the report queue, report pages, user pages, the audit log.
docs/moderation.md.

Moderators see metadata and, of any conversation, only a reported message whose
franking proof holds (PROTOCOL.md section 4). Nothing here edits a row: every
change is a call to ``moderation.services``, which checks the role again and writes
the audit log. The users' and reports' pages are ours (``change_view``); their
forms post to the small views below.
"""

import uuid
from typing import Any, TypeVar

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from accounts.models import User
from common.admin import PanelModelAdmin
from common.errors import ApplicationError
from messaging.models import Report
from moderation import selectors, services
from moderation.forms import ActionForm, RoleForm
from moderation.models import ModerationAction
from moderation.panel import unregister_groups
from moderation.roles import ROLE_PERMISSIONS

Kind = ModerationAction.Kind
_M = TypeVar("_M", bound=Model)

unregister_groups(admin.site)


def _moderator(request: HttpRequest) -> User:
    # admin_view lets only active staff in; this narrows the type for the services.
    if not isinstance(request.user, User):
        raise PermissionDenied
    return request.user


def _refuse_unoffered(request: HttpRequest, kinds: tuple[str, ...]) -> None:
    """An action the form does not offer this role (a crafted POST) is a plain 403."""
    requested = request.POST.get("action", "")
    if requested in kinds and not services.moderator_can(_moderator(request), requested):
        raise PermissionDenied


def _form_error(form: Any, error: ApplicationError) -> None:
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)


class OwnPageAdmin(PanelModelAdmin[_M]):
    """A page of our own instead of Django's change form (``_page``); its forms post to
    their own views, which call the services. Nothing is ever saved from this page."""

    def _get(self, request: HttpRequest, object_id: Any) -> _M:
        raise NotImplementedError

    def _page(self, request: HttpRequest, obj: _M) -> TemplateResponse:
        raise NotImplementedError

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method != "GET":
            raise PermissionDenied
        try:
            pk = uuid.UUID(unquote(object_id))
        except ValueError:
            raise Http404 from None
        return self._page(request, self._get(request, pk))


def _back(obj: Report | User) -> HttpResponseRedirect:
    opts = obj._meta
    return HttpResponseRedirect(
        reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    )


# --- The report queue and report pages -------------------------------------------------------


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(age.key, age.label) for age in selectors.REPORT_AGES]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Report]) -> QuerySet[Report]:
        for age in selectors.REPORT_AGES:
            if age.key == self.value():
                return queryset.filter(age.q(timezone.now()))
        return queryset


class VerificationFilter(admin.SimpleListFilter):
    title = "verification"
    parameter_name = "verification"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("verified", "Verified message"),
            ("unverified", "Unverified message"),
            ("profile", "Profile (nothing to verify)"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Report]) -> QuerySet[Report]:
        value = self.value()
        if value == "verified":
            return queryset.filter(kind=Report.Kind.MESSAGE, verified=True)
        if value == "unverified":
            return queryset.filter(kind=Report.Kind.MESSAGE, verified=False)
        if value == "profile":
            return queryset.filter(kind=Report.Kind.PROFILE)
        return queryset


class AssignmentFilter(admin.SimpleListFilter):
    title = "assignment"
    parameter_name = "assigned"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("me", "Assigned to me"),
            ("nobody", "Unassigned"),
            ("others", "Assigned to others"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Report]) -> QuerySet[Report]:
        value = self.value()
        if value == "me":
            return queryset.filter(assignee=request.user.pk)
        if value == "nobody":
            return queryset.filter(assignee__isnull=True)
        if value == "others":
            return queryset.filter(assignee__isnull=False).exclude(assignee=request.user.pk)
        return queryset


@admin.register(Report)
class ReportAdmin(OwnPageAdmin[Report]):
    list_display = (
        "created_at", "age", "kind", "reason", "verified", "reported", "against_count",
        "reporter_handle", "assignee_handle", "status",
    )  # fmt: skip
    list_filter = ("status", "reason", "kind", AgeFilter, VerificationFilter, AssignmentFilter)
    search_fields = ("reported_user__handle", "reporter__handle")
    list_select_related = ("reporter", "reported_user", "assignee")
    # The queue: open reports first, oldest first.
    ordering = ("status", "created_at")
    actions = ("assign_to_me",)
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users report; moderators never make reports

    def has_change_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False  # reports change only through the services below

    def has_delete_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False  # the audit log points at reports

    def has_handle_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("moderation.handle_report"))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Report]:
        return (
            super()
            .get_queryset(request)
            .annotate(reports_against=selectors.reports_against_count("reported_user"))
        )

    @admin.display(description="Age")
    def age(self, report: Report) -> str:
        seconds = int((timezone.now() - report.created_at).total_seconds())
        if seconds < 3600:
            return f"{seconds // 60} min"
        if seconds < 86400:
            return f"{seconds // 3600} h"
        return f"{seconds // 86400} d"

    @admin.display(description="Reported", ordering="reported_user__handle")
    def reported(self, report: Report) -> str:
        return f"@{report.reported_user.handle}" if report.reported_user else "(deleted)"

    @admin.display(description="Reports against", ordering="reports_against")
    def against_count(self, report: Report) -> int:
        return int(getattr(report, "reports_against", 0))

    @admin.display(description="Reporter", ordering="reporter__handle")
    def reporter_handle(self, report: Report) -> str:
        return f"@{report.reporter.handle}" if report.reporter else "(deleted)"

    @admin.display(description="Assigned to", ordering="assignee__handle")
    def assignee_handle(self, report: Report) -> str:
        return f"@{report.assignee.handle}" if report.assignee else "—"

    @admin.action(description="Assign to me", permissions=["handle"])
    def assign_to_me(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        taken = skipped = 0
        for report_id in queryset.filter(status=Report.Status.OPEN).values_list("pk", flat=True):
            try:
                services.report_assign(moderator=_moderator(request), report_id=report_id)
            except ApplicationError:  # resolved meanwhile, or out of this moderator's reach
                skipped += 1
            else:
                taken += 1
        self.message_user(request, f"{taken} open report(s) assigned to you.")
        if skipped:
            self.message_user(
                request,
                f"{skipped} skipped: resolved meanwhile, or not yours to handle.",
                messages.WARNING,
            )

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<uuid:report_id>/assign/", wrap(self.assign_view), name="messaging_report_assign"
            ),
            path(
                "<uuid:report_id>/resolve/",
                wrap(self.resolve_view),
                name="messaging_report_resolve",
            ),
            *super().get_urls(),
        ]

    def _page(
        self,
        request: HttpRequest,
        report: Report,
        form: ActionForm | None = None,
        status: int = 200,
    ) -> TemplateResponse:
        if form is None:
            form = ActionForm(moderator=_moderator(request), kinds=services.RESOLVING_ACTIONS)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Report of {report.get_kind_display().lower()}",
            "page": selectors.report_page(report=report),
            "form": form,
            "can_handle": self.has_handle_permission(request),
            "is_open": report.status == Report.Status.OPEN,
        }
        return TemplateResponse(request, "admin/moderation/report.html", context, status=status)

    def _get(self, request: HttpRequest, report_id: Any) -> Report:
        if not self.has_view_permission(request):
            raise PermissionDenied
        queryset = Report.objects.select_related(
            "reporter", "reported_user", "assignee", "resolved_by", "message"
        )
        return get_object_or_404(queryset, pk=report_id)

    def assign_view(self, request: HttpRequest, report_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._assign)(request, report_id)

    def _assign(self, request: HttpRequest, report_id: uuid.UUID) -> HttpResponse:
        report = self._get(request, report_id)
        if not self.has_handle_permission(request):
            raise PermissionDenied
        try:
            services.report_assign(moderator=_moderator(request), report_id=report.pk)
        except ApplicationError as error:
            messages.error(request, error.message)
        else:
            messages.success(request, "Assigned to you.")
        return _back(report)

    def resolve_view(self, request: HttpRequest, report_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._resolve)(request, report_id)

    def _resolve(self, request: HttpRequest, report_id: uuid.UUID) -> HttpResponse:
        report = self._get(request, report_id)
        if not self.has_handle_permission(request):
            raise PermissionDenied
        _refuse_unoffered(request, services.RESOLVING_ACTIONS)
        form = ActionForm(
            request.POST, moderator=_moderator(request), kinds=services.RESOLVING_ACTIONS
        )
        status = 400
        if form.is_valid():
            try:
                services.report_resolve(
                    moderator=_moderator(request), report_id=report.pk, action=form.action_input()
                )
            except ApplicationError as error:
                # A refusal keeps the form, with why (the role, the reach, the input).
                _form_error(form, error)
                status = error.status_code
            else:
                messages.success(request, "Report resolved.")
                return _back(report)
        report.refresh_from_db()
        return self._page(request, report, form, status=status)


# --- Users -----------------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("active", "Active"), ("suspended", "Suspended"), ("banned", "Banned")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> QuerySet[User]:
        now = timezone.now()
        value = self.value()
        if value == "banned":
            return queryset.filter(is_active=False)
        if value == "suspended":
            return queryset.filter(is_active=True, suspended_until__gt=now)
        if value == "active":
            return queryset.filter(is_active=True).exclude(suspended_until__gt=now)
        return queryset


@admin.register(User)
class UserAdmin(OwnPageAdmin[User]):
    """Users as metadata: never the phone number, keys, messages or ciphertext; the
    e-mail address only for staff admins."""

    list_display = (
        "handle", "display_name", "date_joined", "status", "is_staff", "reports_against",
    )  # fmt: skip
    list_filter = (StatusFilter, "is_staff", "date_joined")
    ordering = ("-date_joined",)
    date_hierarchy = "date_joined"
    list_per_page = 50

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # people sign up themselves; `createsuperuser` makes the first admin

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return False  # every change is an action of moderation.services

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return False  # banned, never deleted here: reports and the audit log point at users

    def get_search_fields(self, request: HttpRequest) -> tuple[str, ...]:
        # Searching by e-mail would let anyone who may not see addresses test them.
        if request.user.has_perm("moderation.view_email"):
            return ("handle", "display_name", "email")
        return ("handle", "display_name")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).annotate(reports=selectors.reports_against_count("pk"))

    @admin.display(description="Status")
    def status(self, user: User) -> str:
        return selectors.user_status(user)

    @admin.display(description="Reports against", ordering="reports")
    def reports_against(self, user: User) -> int:
        return int(getattr(user, "reports", 0))

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path("<uuid:user_id>/act/", wrap(self.act_view), name="accounts_user_act"),
            path("<uuid:user_id>/role/", wrap(self.role_view), name="accounts_user_role"),
            *super().get_urls(),
        ]

    def _can_manage_roles(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser or request.user.has_perm("moderation.manage_roles"))

    def _get(self, request: HttpRequest, user_id: Any) -> User:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(User, pk=user_id)

    def _page(
        self,
        request: HttpRequest,
        user: User,
        *,
        form: ActionForm | None = None,
        role_form: RoleForm | None = None,
        status: int = 200,
    ) -> TemplateResponse:
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"@{user.handle}",
            "meta": selectors.user_metadata(user=user),
            "actions": selectors.actions_on(user=user),
            "reports": selectors.reports_against(user=user),
            "roles": [group.name for group in user.groups.filter(name__in=ROLE_PERMISSIONS)],
            "show_email": request.user.has_perm("moderation.view_email"),
            "form": form or ActionForm(moderator=_moderator(request), kinds=services.USER_ACTIONS),
            "role_form": role_form or RoleForm(),
            "can_manage_roles": self._can_manage_roles(request),
        }
        return TemplateResponse(request, "admin/moderation/user.html", context, status=status)

    def act_view(self, request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._act)(request, user_id)

    def _act(self, request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
        user = self._get(request, user_id)
        _refuse_unoffered(request, services.USER_ACTIONS)
        form = ActionForm(request.POST, moderator=_moderator(request), kinds=services.USER_ACTIONS)
        if not form.has_choices:
            raise PermissionDenied
        status = 400
        if form.is_valid():
            try:
                services.user_moderate(
                    moderator=_moderator(request), user_id=user.pk, action=form.action_input()
                )
            except ApplicationError as error:
                # A refusal keeps the form, with why (the role, the reach, the input).
                _form_error(form, error)
                status = error.status_code
            else:
                messages.success(request, "Done. The audit log has it.")
                return _back(user)
        user.refresh_from_db()
        return self._page(request, user, form=form, status=status)

    def role_view(self, request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
        return require_POST(self._role)(request, user_id)

    def _role(self, request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
        user = self._get(request, user_id)
        if not self._can_manage_roles(request):
            raise PermissionDenied
        form = RoleForm(request.POST)
        status = 400
        if form.is_valid():
            change = services.role_grant if form.cleaned_data["grant"] else services.role_revoke
            try:
                change(
                    granter=_moderator(request),
                    user_id=user.pk,
                    role=form.cleaned_data["role"],
                    reason=form.cleaned_data["reason"],
                )
            except ApplicationError as error:
                # A refusal keeps the form, with why (the role, the reach, the input).
                _form_error(form, error)
                status = error.status_code
            else:
                messages.success(request, "Roles changed. The audit log has it.")
                return _back(user)
        user.refresh_from_db()
        return self._page(request, user, role_form=form, status=status)


# --- The audit log ---------------------------------------------------------------------------


@admin.register(ModerationAction)
class ModerationActionAdmin(PanelModelAdmin[ModerationAction]):
    """Read-only, for everyone: the model has no add, change or delete permission."""

    list_display = ("created_at", "moderator_handle", "kind", "target_link", "report_link", "until")
    list_filter = ("kind", "created_at")
    search_fields = ("moderator_handle", "target_handle")
    date_hierarchy = "created_at"
    fields = (
        "created_at", "moderator_handle", "kind", "target_handle", "report", "reason",
        "until", "detail",
    )  # fmt: skip
    readonly_fields = fields
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: ModerationAction | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ModerationAction | None = None
    ) -> bool:
        return False

    @admin.display(description="User", ordering="target_handle")
    def target_link(self, action: ModerationAction) -> str:
        if action.target_id is None:
            return "—"
        url = reverse("admin:accounts_user_change", args=[action.target_id])
        return format_html('<a href="{}">@{}</a>', url, action.target_handle)

    @admin.display(description="Report")
    def report_link(self, action: ModerationAction) -> str:
        if action.report_id is None:
            return "—"
        url = reverse("admin:messaging_report_change", args=[action.report_id])
        return format_html('<a href="{}">report</a>', url)
