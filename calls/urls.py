from django.urls import path

from calls import views

app_name = "calls"

urlpatterns = [
    path("calls", views.history, name="history"),
]
