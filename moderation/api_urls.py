from django.urls import path

from moderation import api

# accounts.api_urls has the other me/... routes; none is under me/warnings.
urlpatterns = [
    path("me/warnings", api.WarningListApi.as_view(), name="warnings"),
    path(
        "me/warnings/<int:warning_id>/acknowledge",
        api.WarningAcknowledgeApi.as_view(),
        name="warning-acknowledge",
    ),
]
