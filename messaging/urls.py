"""The messaging pages of the website (the API is in messaging.api_urls)."""

from django.urls import path

from messaging import views

app_name = "messaging"

urlpatterns = [
    path("c/<uuid:conversation_id>", views.conversation, name="conversation"),
    path("new", views.new_conversation, name="new"),
    path("@<str:handle>/message", views.message_user, name="message-user"),
    path("@<str:handle>/report", views.report_profile, name="report-profile"),
]
