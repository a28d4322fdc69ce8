"""Moderation panel for messaging: reports only.

Moderators see a reported message's content only when its franking proof verified
(PROTOCOL.md section 4), and nothing else of any conversation: no other message, no
key, no ciphertext. Conversations and messages have no admin pages on purpose.
"""

from django.contrib import admin
from django.http import HttpRequest

from messaging.models import Report


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin[Report]):
    list_display = ("created_at", "reason", "verified", "status", "reporter", "reported_user")
    list_filter = ("status", "reason", "verified", "created_at")
    search_fields = ("reporter__handle", "reported_user__handle")
    list_select_related = ("reporter", "reported_user")
    fields = (
        "id", "created_at", "reporter", "reported_user", "reason", "comment", "verified",
        "content", "message_sent_at", "status",
    )  # fmt: skip
    readonly_fields = tuple(field for field in fields if field != "status")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Report | None = None) -> bool:
        return False
