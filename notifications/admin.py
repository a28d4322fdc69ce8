"""Notifications in the moderation panel: read-only, for seeing what failed to send.
Push endpoints and keys are not shown (an endpoint is a credential to push to a browser)."""

from django.contrib import admin
from django.http import HttpRequest

from common.admin import PanelModelAdmin
from notifications.models import Delivery


@admin.register(Delivery)
class DeliveryAdmin(PanelModelAdmin):
    list_display = ["created_at", "user", "channel", "state", "attempts", "detail"]
    list_filter = ["channel", "state"]
    list_select_related = ["user"]
    fields = ("user", "channel", "state", "attempts", "detail", "created_at", "finished_at")
    readonly_fields = fields
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Delivery | None = None) -> bool:
        return False
