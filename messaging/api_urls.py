from django.urls import path

from messaging import api

urlpatterns = [
    path("conversations", api.ConversationListApi.as_view(), name="conversations"),
    path(
        "conversations/<uuid:conversation_id>",
        api.ConversationDetailApi.as_view(),
        name="conversation",
    ),
    path("conversations/<uuid:conversation_id>/members", api.MembersApi.as_view(), name="members"),
    path(
        "conversations/<uuid:conversation_id>/members/<str:handle>",
        api.MemberRemoveApi.as_view(),
        name="member",
    ),
    *(
        path(
            f"conversations/<uuid:conversation_id>/{action}",
            api.ConversationActionApi.as_view(action=action),
            name=f"conversation-{action}",
        )
        for action in api.ConversationActionApi.actions
    ),
    path(
        "conversations/<uuid:conversation_id>/messages",
        api.MessageListApi.as_view(),
        name="messages",
    ),
    path(
        "conversations/<uuid:conversation_id>/messages/<uuid:message_id>",
        api.MessageDeleteApi.as_view(),
        name="message",
    ),
    path("conversations/<uuid:conversation_id>/read", api.ReadApi.as_view(), name="read"),
    path("conversations/<uuid:conversation_id>/mute", api.MuteApi.as_view(), name="mute"),
    path(
        "conversations/<uuid:conversation_id>/receipts",
        api.ReceiptsApi.as_view(),
        name="receipts",
    ),
    path(
        "conversations/<uuid:conversation_id>/delivered",
        api.DeliveredApi.as_view(),
        name="delivered",
    ),
    path(
        "conversations/<uuid:conversation_id>/attachments",
        api.AttachmentUploadApi.as_view(),
        name="attachments",
    ),
    path(
        "attachments/<uuid:attachment_id>", api.AttachmentDownloadApi.as_view(), name="attachment"
    ),
    path("sync", api.SyncApi.as_view(), name="sync"),
    path("reports", api.ReportCreateApi.as_view(), name="reports"),
    # accounts.api_urls has other users/<handle>/... routes, none named "report".
    path("users/<str:handle>/report", api.ProfileReportCreateApi.as_view(), name="profile-report"),
]
