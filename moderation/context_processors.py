"""The warning banner on every signed-in page (templates/moderation/_warnings.html,
included by templates/base.html)."""

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from moderation.models import AccountWarning
from moderation.selectors import warnings_for

# More than this at once is unlikely; the next ones show as these are acknowledged.
BANNER_LIMIT = 5


def warnings(request: HttpRequest) -> dict[str, object]:
    """``account_warnings``: the signed-in user's unacknowledged warnings, newest first,
    in one query (on the partial index of unacknowledged ones); nothing and no query for
    anyone else. Lazy, so a page that does not show it costs nothing."""

    def unacknowledged() -> list[AccountWarning]:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return []
        return list(warnings_for(user=user, unacknowledged_only=True)[:BANNER_LIMIT])

    return {"account_warnings": SimpleLazyObject(unacknowledged)}
