from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Live socket"

    def ready(self) -> None:
        from realtime import events  # noqa: F401  (registers the built-in handlers)
