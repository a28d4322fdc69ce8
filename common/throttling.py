"""Throttles that read their rates from settings.API_THROTTLE_RATES when they run, and
count atomically.

DRF's own classes copy the rates at import time, which makes them impossible to
change per deployment or per test. They also keep a list of request times that each
request reads from the cache, appends to and writes back: requests that arrive at
once (in threads of one process, or in several processes sharing Redis) all read the
same list, and all pass. Here each request takes a number from a counter
(``common.counters``: ``cache.add``, else ``cache.incr``), so no more than the rate
pass, however many come at once.

The counter's window opens with the first request and lasts the rate's period; at
most the rate's number of requests pass in it. ``Retry-After`` is the time left until
the window closes.
"""

from typing import TYPE_CHECKING

from django.conf import settings
from rest_framework.throttling import (
    AnonRateThrottle,
    ScopedRateThrottle,
    SimpleRateThrottle,
    UserRateThrottle,
)

from common.counters import count_in_window

if TYPE_CHECKING:  # rest_framework.views imports this module (DEFAULT_THROTTLE_CLASSES)
    from rest_framework.request import Request
    from rest_framework.views import APIView


class _SettingsRates:
    scope: str | None

    def get_rate(self) -> str | None:
        rates: dict[str, str] = settings.API_THROTTLE_RATES
        return rates.get(self.scope or "")


class _AtomicWindow(SimpleRateThrottle):
    """A counter per key and window, in place of SimpleRateThrottle's request list. It
    comes after DRF's Anon/User/Scoped classes in the method order, so that their
    ``allow_request`` (the scoped one picks the view's scope) runs first."""

    num_requests: int | None  # set by SimpleRateThrottle (and ScopedRateThrottle)
    duration: int | None
    _wait: float | None = None

    def allow_request(self, request: "Request", view: "APIView") -> bool:
        limit, duration = self.num_requests, self.duration
        if self.rate is None or limit is None or duration is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = float(self.timer())
        count = count_in_window(f"{key}:count", duration)
        start_key = f"{key}:start"
        if count == 1:
            self.cache.set(start_key, now, duration)  # for Retry-After
        if count <= limit:
            return True
        start = self.cache.get(start_key)
        left = duration - (now - start) if isinstance(start, float) else duration
        self._wait = min(max(left, 1.0), float(duration))
        return False

    def wait(self) -> float | None:
        return self._wait


class AnonThrottle(_SettingsRates, AnonRateThrottle, _AtomicWindow):
    pass


class UserThrottle(_SettingsRates, UserRateThrottle, _AtomicWindow):
    pass


class ScopedThrottle(_SettingsRates, ScopedRateThrottle, _AtomicWindow):
    """Per kind of request: the view names its ``throttle_scope``."""
