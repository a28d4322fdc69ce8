"""ASGI entry point: HTTP through Django, /ws/ through the live socket (realtime)."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()  # sets Django up before the routing imports

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from common.periodic import InProcessSchedule  # noqa: E402
from realtime.auth import SocketAuthMiddleware  # noqa: E402
from realtime.consumers import DeviceSocketConsumer  # noqa: E402

application = InProcessSchedule(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": SocketAuthMiddleware(
                URLRouter([path("ws/", DeviceSocketConsumer.as_asgi())])
            ),
        }
    )
)

# The garbage collector's pauses stop every socket of the process: with a thousand
# sockets open, its default thresholds made a full pass every few seconds and passes
# of 0.2-0.4 s, the whole tail of the delivery latency (docs/performance.md). What
# was loaded so far (Django, the apps) lives as long as the process, so no pass walks
# it again; young objects are collected less often, so fewer survive into the older,
# slower generations. Reference counting still frees everything without cycles at once.
gc.freeze()
gc.set_threshold(10_000, 20, 100)
