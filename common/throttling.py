"""Throttles that read their rates from settings.API_THROTTLE_RATES when they run.

DRF's own classes copy the rates at import time, which makes them impossible to
change per deployment or per test.
"""

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, UserRateThrottle


class _SettingsRates:
    scope: str | None

    def get_rate(self) -> str | None:
        rates: dict[str, str] = settings.API_THROTTLE_RATES
        return rates.get(self.scope or "")


class AnonThrottle(_SettingsRates, AnonRateThrottle):
    pass


class UserThrottle(_SettingsRates, UserRateThrottle):
    pass


class ScopedThrottle(_SettingsRates, ScopedRateThrottle):
    """Per kind of request: the view names its ``throttle_scope``."""
