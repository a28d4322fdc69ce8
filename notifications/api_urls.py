from django.urls import path

from notifications import api

urlpatterns = [
    path("notifications", api.NotificationListApi.as_view(), name="notifications"),
    path("notifications/unread-count", api.UnreadCountApi.as_view(), name="unread-count"),
    path("notifications/read", api.MarkReadApi.as_view(), name="read"),
    path("notifications/preferences", api.PreferencesApi.as_view(), name="preferences"),
    path(
        "notifications/push-subscriptions",
        api.PushSubscriptionsApi.as_view(),
        name="push-subscriptions",
    ),
]
