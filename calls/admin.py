"""Calls in the moderation panel: metadata only, read-only (never the boxed SDPs)."""

from django.contrib import admin
from django.http import HttpRequest

from calls.models import Call
from common.admin import PanelModelAdmin


@admin.register(Call)
class CallAdmin(PanelModelAdmin):
    list_display = ["id", "caller", "callee", "media", "state", "end_reason", "created_at"]
    list_filter = ["state", "media", "end_reason"]
    list_select_related = ["caller", "callee"]
    fields = (
        "id", "caller", "callee", "media", "state", "end_reason",
        "created_at", "answered_at", "ended_at",
    )  # fmt: skip
    readonly_fields = fields
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Call | None = None) -> bool:
        return False
