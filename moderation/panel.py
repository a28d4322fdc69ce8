"""The admin site, as Parley's moderation panel: its header and its dashboard."""

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path

from accounts.services import user_authenticate
from common.errors import ApplicationError
from common.net import client_address


class PanelLoginForm(AdminAuthenticationForm):
    """The panel's sign-in goes through the same service as the site's: the same
    lockout after failures, and a suspended or banned account is told so."""

    def clean(self) -> dict[str, Any]:
        login = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if login is not None and password:
            address = client_address(self.request.META) if self.request else ""
            try:
                self.user_cache = user_authenticate(login=login, password=password, address=address)
            except ApplicationError as error:
                raise ValidationError(error.message, code=error.code) from error
            self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


class PanelSite(admin.AdminSite):
    login_form = PanelLoginForm
    site_header = "Parley moderation"
    site_title = "Parley moderation"
    index_title = "Moderation"

    def get_urls(self) -> list[URLPattern | URLResolver]:
        return [
            path("dashboard/", self.admin_view(self.dashboard_view), name="dashboard"),
            *super().get_urls(),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        from moderation.dashboard import dashboard_response

        return dashboard_response(self, request)

    def index(self, request: HttpRequest, extra_context: dict | None = None) -> TemplateResponse:
        extra = {"can_view_dashboard": request.user.has_perm("moderation.view_dashboard")}
        return super().index(request, {**extra, **(extra_context or {})})


def unregister_groups(site: admin.AdminSite) -> None:
    # Roles are defined in code (moderation.roles): no page edits a group's permissions.
    if site.is_registered(Group):
        site.unregister(Group)
