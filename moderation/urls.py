"""The moderation pages of the website for users (the API is in moderation.api_urls; the
panel is the Django admin at /admin/)."""

from django.urls import path

from moderation import views

app_name = "moderation"

urlpatterns = [
    path(
        "warnings/<int:warning_id>/acknowledge",
        views.warning_acknowledge,
        name="warning-acknowledge",
    ),
]
