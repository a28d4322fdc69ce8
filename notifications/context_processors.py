"""The unread count in every signed-in page's nav (templates/base.html)."""

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from notifications.selectors import unread_count


def notifications(request: HttpRequest) -> dict[str, object]:
    """``unread_notifications``: one COUNT (on a partial index) for a signed-in user,
    0 and no query for anyone else. Lazy, like Django's own ``user``: a page that
    does not show it (the 500 page, which must render with the database down)
    costs nothing."""

    def count() -> int:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return 0
        return unread_count(user=user)

    return {"unread_notifications": SimpleLazyObject(count)}
