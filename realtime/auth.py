"""Who is on the other end of a socket (docs/realtime.md, "Authentication").

- Apps send ``Authorization: Bearer <token>`` in the handshake. Never a token in
  the URL: URLs end up in logs.
- The site's page uses its session cookie, and only from a page of our own origin:
  the Origin header must match the Host (or REALTIME_ALLOWED_ORIGINS), otherwise any
  site the user visits could open a socket with their cookie.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings

from accounts.models import ApiToken, User
from accounts.services import api_token_authenticate
from realtime.publish import CLOSE_BAD_ORIGIN, CLOSE_UNAUTHENTICATED


@dataclass(frozen=True)
class SocketIdentity:
    user: User | None
    method: str | None = None  # "token" or "session"
    token_id: int | None = None
    token_device_id: Any = None
    session_key: str | None = None
    failure_code: int | None = None
    failure: str | None = None


def _origin_allowed(headers: dict[bytes, bytes]) -> bool:
    origin = headers.get(b"origin", b"").decode("latin1")
    host = headers.get(b"host", b"").decode("latin1")
    if not origin or not host:
        return False
    if origin in settings.REALTIME_ALLOWED_ORIGINS:
        return True
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and parts.netloc == host


@database_sync_to_async
def _token_identity(key: str) -> SocketIdentity:
    token: ApiToken | None = api_token_authenticate(key=key)
    if token is None:
        return SocketIdentity(
            None, failure_code=CLOSE_UNAUTHENTICATED, failure="Invalid or revoked token."
        )
    return SocketIdentity(
        token.user, method="token", token_id=token.pk, token_device_id=token.device_id
    )


async def resolve_identity(scope: dict[str, Any]) -> SocketIdentity:
    headers = dict(scope.get("headers", []))
    authorization = headers.get(b"authorization", b"").decode("latin1").split()
    if authorization:
        if len(authorization) != 2 or authorization[0].lower() != "bearer":
            return SocketIdentity(
                None,
                failure_code=CLOSE_UNAUTHENTICATED,
                failure="Use Authorization: Bearer <token>.",
            )
        return await _token_identity(authorization[1])
    if not _origin_allowed(headers):
        return SocketIdentity(
            None, failure_code=CLOSE_BAD_ORIGIN, failure="Cookie sign-in needs a same-origin page."
        )
    user = await get_user(scope)
    if not isinstance(user, User):
        return SocketIdentity(None, failure_code=CLOSE_UNAUTHENTICATED, failure="Not signed in.")
    return SocketIdentity(user, method="session", session_key=scope["session"].session_key)


class _IdentityMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        scope["parley_identity"] = await resolve_identity(scope)
        return await self.inner(scope, receive, send)


def SocketAuthMiddleware(inner: Any) -> Any:  # noqa: N802  (reads like the class it builds)
    return CookieMiddleware(SessionMiddleware(_IdentityMiddleware(inner)))
