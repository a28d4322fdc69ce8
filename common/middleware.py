"""Site-wide response middleware."""

from django.http import HttpRequest, HttpResponseBase
from django.utils.deprecation import MiddlewareMixin

from common.api import not_stored_by_caches


class SignedInPagesNotCachedMiddleware(MiddlewareMixin):
    """A page rendered for a signed-in person is theirs: no shared cache may keep it,
    and a browser should not show it from its cache after they sign out on a shared
    computer. Views that set their own Cache-Control keep it (the API sets its own)."""

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            not_stored_by_caches(response)
        return response
