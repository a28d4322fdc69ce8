"""Panel pages for devices, tokens and security events: metadata only, read-only.

Users have their page in moderation/admin.py (with the moderation actions). Never
shown here: the phone number, key material (public keys, certificates, the backup),
token hashes. The pages list their fields explicitly, so a new model field stays
hidden until someone decides it may be shown.
"""

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import ApiToken, Device, SecurityEvent
from common.admin import PanelModelAdmin


@admin.register(Device)
class DeviceAdmin(PanelModelAdmin[Device]):
    list_display = ("id", "user", "name", "registered_at", "last_seen_at", "revoked_at")
    list_filter = ("registered_at", "revoked_at")
    search_fields = ("user__handle", "user__email", "name")
    list_select_related = ("user",)
    fields = ("id", "user", "name", "created_at", "registered_at", "last_seen_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # devices are certified by their owner's key, never made here

    def has_delete_permission(self, request: HttpRequest, obj: Device | None = None) -> bool:
        return False  # revoked by their owner, never deleted: tokens and history point here


@admin.register(ApiToken)
class ApiTokenAdmin(PanelModelAdmin[ApiToken]):
    list_display = ("prefix", "user", "name", "device", "created_at", "last_used_at", "revoked_at")
    list_filter = ("created_at", "revoked_at")
    search_fields = ("user__handle", "name")
    list_select_related = ("user", "device")
    fields = ("prefix", "user", "name", "device", "created_at", "last_used_at", "revoked_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False


@admin.register(SecurityEvent)
class SecurityEventAdmin(PanelModelAdmin[SecurityEvent]):
    list_display = ("user", "kind", "created_at", "emailed_at")
    list_filter = ("kind", "created_at")
    search_fields = ("user__handle",)
    list_select_related = ("user",)
    fields = ("user", "kind", "device", "created_at", "emailed_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: SecurityEvent | None = None) -> bool:
        return False
