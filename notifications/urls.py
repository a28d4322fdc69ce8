"""The notification pages of the website (the API is in notifications.api_urls)."""

from django.urls import path

from notifications import views

app_name = "notifications"

urlpatterns = [
    path("notifications", views.notification_list, name="list"),
    path("notifications/read", views.notifications_read_all, name="read-all"),
    path("settings/notifications", views.settings_notifications, name="settings"),
    # At the root, so the service worker's scope is the whole site.
    path("sw.js", views.service_worker, name="service-worker"),
]
