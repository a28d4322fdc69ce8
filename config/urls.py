from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from common.views import healthz
from messaging.views import home

api_v1: list[URLPattern | URLResolver] = [
    path("", include(("accounts.api_urls", "accounts"), namespace="accounts")),
    path("", include(("messaging.api_urls", "messaging"), namespace="messaging")),
    path("", include(("calls.api_urls", "calls"), namespace="calls")),
    path("", include(("notifications.api_urls", "notifications"), namespace="notifications")),
    path("", include(("moderation.api_urls", "moderation"), namespace="moderation")),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="api:schema"), name="docs"),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("", home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("admin/", admin.site.urls),
    path("", include("messaging.urls")),
    path("", include("calls.urls")),
    path("", include("notifications.urls")),
    path("", include("moderation.urls")),
    path("", include("accounts.urls")),
]

if settings.DEBUG:
    urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)

handler404 = "common.views.not_found"
handler500 = "common.views.server_error"
