"""The accounts part of the website: sign-up, sign-in, settings, profiles and search.

Each view parses a form, calls a service (writes) or a selector (reads), and renders;
a service's ApplicationError goes back to the form, never out as a 500. See
docs/accounts.md.
"""

import uuid
from collections.abc import Callable

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render, resolve_url
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts import selectors, services
from accounts.forms import (
    LoginForm,
    PasswordChangeForm,
    PrivacyForm,
    ProfileForm,
    SearchForm,
    SignUpForm,
)
from accounts.models import User
from common.errors import ApplicationError, NotFound
from common.net import client_address

AUTH_BACKEND = "accounts.backends.HandleOrEmailBackend"
SEARCH_PAGE_SIZE = 20


def viewer_of(request: HttpRequest) -> User:
    """The signed-in user. Every caller sits behind login_required."""
    user = request.user
    if not isinstance(user, User):
        raise DjangoPermissionDenied
    return user


def _safe_next(request: HttpRequest) -> str:
    """The ?next= address if it stays on this site, else empty."""
    url = request.POST.get("next") or request.GET.get("next") or ""
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return ""


# --- Sign-up, sign-in, sign-out --------------------------------------------------------------


@sensitive_post_parameters("password", "password2")
@never_cache
@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.method == "GET":
        return redirect("home")
    form = SignUpForm(request.POST) if request.method == "POST" else SignUpForm()
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        try:
            user = services.user_sign_up(
                handle=data["handle"],
                email=data["email"],
                password=data["password"],
                display_name=data["display_name"],
            )
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            login(request, user, backend=AUTH_BACKEND)
            return redirect("home")
    return render(request, "accounts/signup.html", {"form": form})


@sensitive_post_parameters("password")
@never_cache
@require_http_methods(["GET", "POST"])
def login_view(request: HttpRequest) -> HttpResponse:
    next_url = _safe_next(request)
    if request.user.is_authenticated and request.method == "GET":
        return HttpResponseRedirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))
    form = LoginForm(request.POST) if request.method == "POST" else LoginForm()
    if form.is_bound and form.is_valid():
        try:
            user = services.user_authenticate(
                login=form.cleaned_data["login"],
                password=form.cleaned_data["password"],
                address=client_address(request.META),
            )
        except ApplicationError as error:  # wrong password, locked out, suspended, banned
            form.add_service_error(error)
        else:
            login(request, user, backend=AUTH_BACKEND)
            return HttpResponseRedirect(next_url or resolve_url(settings.LOGIN_REDIRECT_URL))
    return render(request, "accounts/login.html", {"form": form, "next": next_url})


@require_http_methods(["GET", "POST"])
def logout_view(request: HttpRequest) -> HttpResponse:
    """GET asks to confirm; only a POST (with its CSRF token) signs out."""
    if request.method == "POST":
        services.session_end_sockets(session_key=request.session.session_key)
        logout(request)
        return redirect(settings.LOGOUT_REDIRECT_URL)
    if not request.user.is_authenticated:
        return redirect(settings.LOGIN_URL)
    return render(request, "accounts/logout.html")


# --- Settings --------------------------------------------------------------------------------


@sensitive_post_parameters("phone_number")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_profile(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    if request.method == "POST":
        form = ProfileForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            # An empty phone field keeps the number; "remove" clears it.
            phone = "" if data["remove_phone_number"] else (data["phone_number"] or None)
            try:
                services.user_update_settings(
                    user=user,
                    display_name=data["display_name"],
                    bio=data["bio"],
                    email=data["email"],
                    phone_number=phone,
                    avatar=data["avatar"] or None,
                    remove_avatar=data["remove_avatar"],
                )
            except ApplicationError as error:
                user.refresh_from_db()  # the services changed it in memory before the rollback
                form.add_service_error(error)
            else:
                messages.success(request, "Your profile has been saved.")
                return redirect("accounts:settings-profile")
    else:
        form = ProfileForm(
            initial={"display_name": user.display_name, "bio": user.bio, "email": user.email}
        )
    context = {"form": form, "has_phone_number": bool(user.phone_number)}
    return render(request, "accounts/settings_profile.html", context)


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_privacy(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    if request.method == "POST":
        form = PrivacyForm(request.POST)
        if form.is_valid():
            try:
                services.user_update_privacy(
                    user=user,
                    dm_policy=form.cleaned_data["dm_policy"],
                    call_policy=form.cleaned_data["call_policy"],
                    send_read_receipts=form.cleaned_data["send_read_receipts"],
                    relay_calls=form.cleaned_data["relay_calls"],
                )
            except ApplicationError as error:
                user.refresh_from_db()
                form.add_service_error(error)
            else:
                messages.success(request, "Your privacy settings have been saved.")
                return redirect("accounts:settings-privacy")
    else:
        form = PrivacyForm(
            initial={
                "dm_policy": user.dm_policy,
                "call_policy": user.call_policy,
                "send_read_receipts": user.send_read_receipts,
                "relay_calls": user.relay_calls,
            }
        )
    return render(request, "accounts/settings_privacy.html", {"form": form})


@sensitive_post_parameters("old_password", "new_password", "new_password2")
@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def settings_password(request: HttpRequest) -> HttpResponse:
    user = viewer_of(request)
    form = PasswordChangeForm(request.POST) if request.method == "POST" else PasswordChangeForm()
    if form.is_bound and form.is_valid():
        try:
            services.user_change_password(
                user=user,
                old_password=form.cleaned_data["old_password"],
                new_password=form.cleaned_data["new_password"],
            )
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            update_session_auth_hash(request, user)  # keep this session signed in
            messages.success(request, "Your password has been changed.")
            return redirect("accounts:settings-password")
    return render(request, "accounts/settings_password.html", {"form": form})


@never_cache
@login_required
@require_GET
def settings_devices(request: HttpRequest) -> HttpResponse:
    devices = selectors.devices_of_user(user=viewer_of(request))
    return render(request, "accounts/settings_devices.html", {"devices": devices})


def _browser_page(template: str) -> Callable[[HttpRequest], HttpResponse]:
    """A page whose work happens in the browser, with keys the server never sees
    (docs/web.md): the server renders its frame and nothing else."""

    @never_cache
    @login_required
    @require_GET
    def page(request: HttpRequest) -> HttpResponse:
        return render(request, template)

    return page


keys_setup = _browser_page("accounts/setup.html")
settings_keys = _browser_page("accounts/settings_keys.html")
settings_safety = _browser_page("accounts/settings_safety.html")


@login_required
@require_POST
def device_revoke(request: HttpRequest, device_id: uuid.UUID) -> HttpResponse:
    try:
        device = services.device_revoke(user=viewer_of(request), device_id=device_id)
    except NotFound as exc:
        raise Http404 from exc
    messages.success(request, f"Removed {device.name or 'the device'}. It is signed out.")
    return redirect("accounts:settings-devices")


# --- Profiles and search ---------------------------------------------------------------------


@login_required
@require_GET
def profile(request: HttpRequest, handle: str) -> HttpResponse:
    viewer = viewer_of(request)
    try:
        found = selectors.profile_get(viewer=viewer, handle=handle)
    except NotFound as exc:
        raise Http404 from exc
    user, rel = found.user, found.relationship
    message_note = call_note = ""
    if viewer.pk != user.pk:
        # profile_get says whether, not why; the reasons come from the same rules.
        if not found.can_message:
            reason = selectors.message_permission(sender=viewer, recipient=user, rel=rel).reason
            message_note = selectors.refusal_text(selectors.MESSAGE_REFUSALS, reason, user.handle)
        if not found.can_call:
            reason = selectors.call_permission(caller=viewer, callee=user, rel=rel).reason
            call_note = selectors.refusal_text(selectors.CALL_REFUSALS, reason, user.handle)
    context = {
        "profile": found,
        "shown": user,
        "rel": rel,
        "is_self": viewer.pk == user.pk,
        "message_note": message_note,
        "call_note": call_note,
    }
    return render(request, "accounts/profile.html", context)


SocialAction = Callable[[User, User], object]

# What each profile button does, and what it says when done.
SOCIAL_ACTIONS: dict[str, tuple[SocialAction, str]] = {
    "follow": (
        lambda me, them: services.user_follow(follower=me, followee=them),
        "You now follow @{handle}.",
    ),
    "unfollow": (
        lambda me, them: services.user_unfollow(follower=me, followee=them),
        "You no longer follow @{handle}.",
    ),
    "block": (
        lambda me, them: services.user_block(blocker=me, blocked=them),
        "You blocked @{handle}. Neither of you can follow, message or call the other.",
    ),
    "unblock": (
        lambda me, them: services.user_unblock(blocker=me, blocked=them),
        "You unblocked @{handle}.",
    ),
    "mute": (lambda me, them: services.user_mute(muter=me, muted=them), "You muted @{handle}."),
    "unmute": (
        lambda me, them: services.user_unmute(muter=me, muted=them),
        "You unmuted @{handle}.",
    ),
}


@login_required
@require_POST
def social_action(request: HttpRequest, handle: str, action: str) -> HttpResponse:
    """Follow, block or mute (or undo it) and go back to the target's profile."""
    apply, done = SOCIAL_ACTIONS[action]
    viewer = viewer_of(request)
    try:
        target = selectors.user_get_visible(viewer=viewer, handle=handle)
    except NotFound as exc:
        raise Http404 from exc
    try:
        apply(viewer, target)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, done.format(handle=target.handle))
    return redirect("accounts:profile", handle=target.handle)


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    viewer = viewer_of(request)
    form = SearchForm(request.GET)
    page = None
    if form.is_valid() and form.cleaned_data["q"]:
        try:
            users = selectors.user_search(viewer=viewer, query=form.cleaned_data["q"])
        except ApplicationError as error:
            form.add_service_error(error)
        else:
            page = Paginator(users, SEARCH_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "accounts/search.html", {"form": form, "page": page})
