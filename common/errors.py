"""The one family of errors that services raise.

The DRF exception handler (common.api) and the socket error event (realtime) turn
an ApplicationError into the same shape everywhere:
``{"error": {"code": "...", "message": "...", "field": "..."}}``.
"""

from typing import Any

import kombu.exceptions
import redis.exceptions

# A part behind the server (Redis: cache, throttles, channel layer, broker) that is
# down for a moment. The request may be tried again; it is not a bug of ours.
SERVICE_UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)
RETRY_UNAVAILABLE_SECONDS = 5
UNAVAILABLE_MESSAGE = "The service is briefly unavailable. Try again in a few seconds."


class ApplicationError(Exception):
    """A refusal a user can act on. ``code`` is stable; ``message`` is for people."""

    status_code = 400

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        if status_code is not None:
            self.status_code = status_code
        self.extra = extra or {}

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field, **self.extra}


class NotFound(ApplicationError):
    status_code = 404


class PermissionDenied(ApplicationError):
    status_code = 403


class Conflict(ApplicationError):
    status_code = 409


class RateLimited(ApplicationError):
    status_code = 429

    def __init__(self, code: str, message: str, *, retry_after: int, **kwargs: Any) -> None:
        super().__init__(code, message, **kwargs)
        self.retry_after = retry_after
        self.extra.setdefault("retry_after", retry_after)
