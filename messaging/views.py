"""The messaging pages of the website (docs/web.md).

The server renders each page's frame; the browser does the rest through the API
and the socket, because only the browser holds the keys that open messages. A page
the browser cannot use without keys sends it to the key setup first (in JS: the
server does not know which browser holds which keys).
"""

import uuid

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors as account_selectors
from accounts.views import viewer_of
from common.errors import ApplicationError, NotFound
from messaging import selectors, services
from messaging.models import Report
from messaging.services import DISAPPEARING_TIMERS


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("accounts:login")
    return render(request, "messaging/inbox.html")


@login_required
@require_GET
def conversation(request: HttpRequest, conversation_id: uuid.UUID) -> HttpResponse:
    try:
        found = selectors.conversation_get_for_member(
            user=viewer_of(request), conversation_id=conversation_id
        )
    except NotFound as exc:
        raise Http404 from exc
    timers = list(DISAPPEARING_TIMERS.items())
    context = {"conversation": found, "timers": timers, "report_reasons": Report.Reason.choices}
    return render(request, "messaging/conversation.html", context)


@login_required
@require_GET
def new_conversation(request: HttpRequest) -> HttpResponse:
    return render(request, "messaging/new.html", {"to": request.GET.get("to", "")[:40]})


@login_required
@require_POST
def message_user(request: HttpRequest, handle: str) -> HttpResponseRedirect:
    """The profile's Message button: the one direct conversation with them."""
    viewer = viewer_of(request)
    try:
        other = account_selectors.user_get_visible(viewer=viewer, handle=handle)
        found, _ = services.conversation_get_or_create_direct(user=viewer, other=other)
    except NotFound as exc:
        raise Http404 from exc
    except ApplicationError as error:
        messages.error(request, error.message)
        return redirect("accounts:profile", handle=handle)
    return redirect("messaging:conversation", conversation_id=found.pk)


@login_required
@require_POST
def report_profile(request: HttpRequest, handle: str) -> HttpResponseRedirect:
    """The profile's Report form. The outcome, thanks or the reason it was refused,
    shows on the profile as a message line."""
    viewer = viewer_of(request)
    try:
        reported = account_selectors.user_get_reportable(handle=handle)
    except NotFound as exc:
        raise Http404 from exc
    try:
        services.report_profile(
            reporter=viewer,
            reported=reported,
            reason=request.POST.get("reason", ""),
            comment=request.POST.get("comment", ""),
        )
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Reported. Thank you: our moderators will look at it.")
    return redirect("accounts:profile", handle=reported.handle)
