"""The admin site, as Parley's moderation panel: its header and its dashboard."""

from django.contrib import admin
from django.contrib.auth.models import Group
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path


class PanelSite(admin.AdminSite):
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
