from django.urls import path

from calls import api

urlpatterns = [
    path("calls", api.CallListApi.as_view(), name="calls"),
    path("calls/ringing", api.RingingCallsApi.as_view(), name="calls-ringing"),
    path("calls/<uuid:call_id>", api.CallDetailApi.as_view(), name="call"),
]
