"""The notification pages of the website: the list, the preferences, and the push
service worker (docs/notifications.md, docs/web.md).

Views parse, call one service or selector, and render. Marking one notification read
on click, live updates and the push subscription happen in the browser
(static/js/notifications.js) through the API.
"""

from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles import finders
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.views import viewer_of
from common.errors import ApplicationError
from notifications import selectors, services
from notifications.models import Channel

PAGE_SIZE = 50
SERVICE_WORKER_SOURCE = "js/push-sw.js"


@never_cache
@login_required
@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    page = Paginator(selectors.notifications_for(user=user), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    items = [(notification, selectors.describe(notification)) for notification in page]
    return render(request, "notifications/list.html", {"items": items, "page": page})


@login_required
@require_POST
def notifications_read_all(request: HttpRequest) -> HttpResponseRedirect:
    services.notifications_mark_read(user=viewer_of(request), ids=None)
    return redirect("notifications:list")


def _preference_changes(post: QueryDict) -> dict[str, dict[str, bool]]:
    """``{kind: {channel: enabled}}`` from the form: ``shown`` names every
    ``kind.channel`` the form had a checkbox for, ``on`` the checked ones (an
    unchecked box sends nothing). The service checks the names."""
    checked = set(post.getlist("on"))
    changes: dict[str, dict[str, bool]] = {}
    for pair in [*post.getlist("shown"), *checked]:
        kind, _, channel = pair.partition(".")
        changes.setdefault(kind, {})[channel] = pair in checked
    return changes


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_notifications(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    error = None
    if request.method == "POST":
        try:
            services.preferences_update(user=user, changes=_preference_changes(request.POST))
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, "Your notification settings have been saved.")
            return redirect("notifications:settings")
    preferences = selectors.preferences_for(user=user)
    # One column per channel; None where a kind is not offered on it (the digest's push).
    rows = [
        (
            kind,
            label,
            [(channel, name, preferences[kind].get(channel)) for channel, name in Channel.choices],
        )
        for kind, label, _channels in selectors.PREFERENCE_ROWS
    ]
    context = {
        "channels": Channel.choices,
        "rows": rows,
        "error": error,
        "vapid_public_key": settings.VAPID_PUBLIC_KEY,
    }
    return render(request, "notifications/settings.html", context, status=400 if error else 200)


def _service_worker_source() -> bytes:
    # Read on each request (a few kB), so a changed worker is served without a restart.
    path = finders.find(SERVICE_WORKER_SOURCE)
    if not isinstance(path, str):
        raise RuntimeError(f"{SERVICE_WORKER_SOURCE} is missing from the static files")
    return Path(path).read_bytes()


@require_GET
def service_worker(request: HttpRequest) -> HttpResponse:
    """The push service worker, from the site's root: a worker's scope is at most its
    own directory, and it must see every page to focus one on a notification click.
    no-cache: browsers then check for a new worker on every visit."""
    response = HttpResponse(_service_worker_source(), content_type="application/javascript")
    response["Service-Worker-Allowed"] = "/"
    response["Cache-Control"] = "no-cache"
    return response
