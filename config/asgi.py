"""ASGI entry point: HTTP through Django, /ws/ through the live socket (realtime)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the routing imports

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from realtime.auth import SocketAuthMiddleware  # noqa: E402
from realtime.consumers import DeviceSocketConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SocketAuthMiddleware(URLRouter([path("ws/", DeviceSocketConsumer.as_asgi())])),
    }
)
