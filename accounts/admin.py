"""Moderation panel for accounts: metadata only.

Never shown here: the phone number, key material (public keys, certificates, the
backup), token hashes. The admin forms list their fields explicitly, so a new
model field stays hidden until someone decides it may be shown.
"""

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from accounts.models import ApiToken, Device, SecurityEvent, User


class DeviceInline(admin.TabularInline[Device, User]):
    model = Device
    fields = ("id", "name", "registered_at", "last_seen_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        return False


@admin.register(User)
class UserAdmin(admin.ModelAdmin[User]):
    list_display = (
        "handle",
        "display_name",
        "date_joined",
        "is_active",
        "is_staff",
        "suspended_until",
        "device_count",
    )
    list_filter = (
        "is_active",
        "is_staff",
        "is_superuser",
        "dm_policy",
        "call_policy",
        "date_joined",
    )
    search_fields = ("handle", "display_name", "email")
    ordering = ("-date_joined",)
    date_hierarchy = "date_joined"
    fields = (
        "id", "handle", "display_name", "bio", "avatar", "email", "date_joined", "last_login",
        "is_active", "suspended_until", "is_staff", "is_superuser", "groups",
        "dm_policy", "call_policy", "send_read_receipts", "relay_calls",
    )  # fmt: skip
    # Suspending and banning go through services (tokens revoked, sockets closed), not
    # through editing these fields.
    readonly_fields = (
        "id", "handle", "email", "date_joined", "last_login", "is_active", "suspended_until",
    )  # fmt: skip
    filter_horizontal = ("groups",)
    inlines = (DeviceInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # people sign up themselves; `createsuperuser` makes the first admin

    def get_readonly_fields(self, request: HttpRequest, obj: User | None = None) -> tuple[str, ...]:
        # Only a superuser hands out staff rights; a moderator cannot promote anyone,
        # themselves included.
        readonly = tuple(self.readonly_fields)
        if not getattr(request.user, "is_superuser", False):
            readonly += ("is_staff", "is_superuser", "groups")
        return readonly

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return (
            super()
            .get_queryset(request)
            .annotate(active_devices=Count("devices", filter=Q(devices__revoked_at__isnull=True)))
        )

    @admin.display(description="Devices", ordering="active_devices")
    def device_count(self, user: User) -> int:
        return int(getattr(user, "active_devices", 0))


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin[Device]):
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
class ApiTokenAdmin(admin.ModelAdmin[ApiToken]):
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
class SecurityEventAdmin(admin.ModelAdmin[SecurityEvent]):
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
