"""Warnings on the website: the banner's "I understand" (templates/moderation/
_warnings.html, fed by moderation.context_processors). The moderation panel itself is
the Django admin (moderation.panel)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from accounts.views import viewer_of
from common.errors import NotFound
from moderation import services


def _back(request: HttpRequest) -> str:
    """The page the banner was on (the form's ``next``) if it is on this site, else home."""
    url = request.POST.get("next", "")
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return resolve_url("home")


@login_required
@require_POST
def warning_acknowledge(request: HttpRequest, warning_id: int) -> HttpResponseRedirect:
    try:
        services.warning_acknowledge(user=viewer_of(request), warning_id=warning_id)
    except NotFound as exc:
        raise Http404 from exc
    return HttpResponseRedirect(_back(request))
