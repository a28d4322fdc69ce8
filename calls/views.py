"""The call history page. Calls themselves happen in the page's script (calls.js)."""

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.views import viewer_of
from calls import selectors


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    page = Paginator(selectors.calls_of(user=user), 50).get_page(request.GET.get("page"))
    calls = selectors.call_views(user=user, calls=page.object_list)
    return render(request, "calls/history.html", {"calls": calls, "page": page})
