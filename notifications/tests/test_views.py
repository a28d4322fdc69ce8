"""The notification pages: the list, marking read, the preferences form, the nav
badge and the service worker's headers."""

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from accounts.models import User
from accounts.tests.factories import make_user
from messaging import services as messaging_services
from notifications.context_processors import notifications as notifications_context
from notifications.models import Kind, Notification, Preference
from notifications.selectors import DEFAULT_PREFERENCES, preferences_for

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.HandleOrEmailBackend")
    return client


def new_follower(user: User, actor: User, **extra: Any) -> Notification:
    return Notification.objects.create(user=user, kind=Kind.NEW_FOLLOWER, actor=actor, **extra)


def new_messages(user: User, actor: User, count: int = 1) -> Notification:
    conversation, _ = messaging_services.conversation_get_or_create_direct(user=actor, other=user)
    return Notification.objects.create(
        user=user, kind=Kind.MESSAGE, actor=actor, conversation=conversation, count=count
    )


def badge(html: str) -> re.Match[str]:
    """The nav link and its badge (templates/base.html)."""
    found = re.search(
        r'<a href="/notifications"[^>]*aria-label="([^"]*)">Notifications '
        r'<span class="badge unread-badge" data-unread-badge( hidden)?>([^<]*)</span>',
        html,
    )
    assert found, "no notifications link in the nav"
    return found


@pytest.fixture
def alice() -> User:
    return make_user("alice", display_name="Alice")


@pytest.fixture
def bob() -> User:
    return make_user("bob")


# --- Sign-in required ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "name"),
    [
        ("get", "notifications:list"),
        ("post", "notifications:read-all"),
        ("get", "notifications:settings"),
        ("post", "notifications:settings"),
    ],
)
def test_pages_and_forms_need_a_signed_in_user(client, method, name):
    url = reverse(name)

    response = getattr(client, method)(url)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next={url}"


def test_a_get_does_not_mark_anything_read(alice, bob):
    new_follower(bob, alice)

    response = signed_in(bob).get(reverse("notifications:read-all"))

    assert response.status_code == 405
    assert Notification.objects.filter(read_at__isnull=True).count() == 1


# --- The list --------------------------------------------------------------------------------


def test_the_list_shows_what_happened_and_links_to_it(alice, bob):
    carol = make_user("carol")
    messages = new_messages(bob, alice, count=3)
    yesterday = timezone.now() - timedelta(days=1)
    follow = new_follower(
        bob, carol, created_at=yesterday, updated_at=yesterday, read_at=timezone.now()
    )
    new_follower(alice, carol)  # someone else's

    response = signed_in(bob).get(reverse("notifications:list"))

    assert response.status_code == 200
    html = response.content.decode()
    conversation_url = reverse("messaging:conversation", args=[messages.conversation_id])
    assert f'href="{conversation_url}"' in html
    assert "New messages from @alice" in html
    assert "3 new messages from @alice." in html
    assert f'href="{reverse("accounts:profile", args=["carol"])}"' in html
    assert "@carol follows you" in html
    # Unread marked (for the eye and for screen readers), the read one not.
    assert f'class="notification notification-unread" data-notification-id="{messages.pk}"' in html
    assert f'class="notification" data-notification-id="{follow.pk}"' in html
    assert html.count("Unread: ") == 1
    # Newest first.
    assert html.index(str(messages.pk)) < html.index(str(follow.pk))
    assert "Mark all as read" in html
    assert html.count("data-notification-id=") == 2


def test_the_list_pages_by_50_newest_first_without_a_query_per_item(
    alice, bob, django_assert_max_num_queries
):
    start = timezone.now() - timedelta(days=1)
    people = [make_user(f"fan{i}") for i in range(51)]
    for i, fan in enumerate(people):
        when = start + timedelta(minutes=i)
        new_follower(bob, fan, created_at=when, updated_at=when)
    client = signed_in(bob)
    client.get(reverse("notifications:list"))  # session and user cached alike below

    with django_assert_max_num_queries(8):
        first = client.get(reverse("notifications:list")).content.decode()

    assert first.count("data-notification-id=") == 50
    assert "@fan50 follows you" in first
    assert "@fan0 follows you" not in first
    assert "data-live" in first  # live ones go on top of the first page only
    second = client.get(reverse("notifications:list"), {"page": 2}).content.decode()
    assert second.count("data-notification-id=") == 1
    assert "@fan0 follows you" in second
    assert "data-live" not in second


def test_an_empty_list_says_so(bob):
    html = signed_in(bob).get(reverse("notifications:list")).content.decode()

    assert 'id="notifications-empty">' in html
    assert 'id="read-all" hidden' in html


def test_mark_all_as_read_clears_the_badge(alice, bob, django_capture_on_commit_callbacks):
    carol = make_user("carol")
    new_messages(bob, alice)
    new_follower(bob, carol)
    theirs = new_follower(alice, carol)
    client = signed_in(bob)
    assert badge(client.get(reverse("notifications:list")).content.decode()).group(3) == "2"

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("notifications:read-all"))

    assert response.status_code == 302
    assert response["Location"] == reverse("notifications:list")
    assert not Notification.objects.filter(user=bob, read_at__isnull=True).exists()
    theirs.refresh_from_db()
    assert theirs.read_at is None
    html = client.get(response["Location"]).content.decode()
    found = badge(html)
    assert found.group(1) == "Notifications"
    assert found.group(2) == " hidden"
    assert "Unread: " not in html


# --- The nav badge ---------------------------------------------------------------------------


def test_the_badge_shows_the_unread_count_on_every_page(alice, bob):
    for fan in [alice, make_user("carol"), make_user("dave")]:
        new_follower(bob, fan)
    new_follower(bob, make_user("erin"), read_at=timezone.now())

    found = badge(signed_in(bob).get(reverse("calls:history")).content.decode())

    assert found.group(1) == "Notifications, 3 unread"
    assert found.group(2) is None
    assert found.group(3) == "3"


def test_the_badge_says_99_plus_past_99(bob):
    for i in range(100):
        new_follower(bob, make_user(f"fan{i}"))

    found = badge(signed_in(bob).get(reverse("calls:history")).content.decode())

    assert found.group(1) == "Notifications, 100 unread"
    assert found.group(3) == "99+"


def test_the_count_is_one_query_when_shown_and_none_for_anyone_else(bob, django_assert_num_queries):
    new_follower(bob, make_user("carol"))
    request = RequestFactory().get("/")
    request.user = bob

    with django_assert_num_queries(0):
        context = notifications_context(request)
    with django_assert_num_queries(1):
        assert int(str(context["unread_notifications"])) == 1

    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    with django_assert_num_queries(0):
        assert not notifications_context(request)["unread_notifications"]


def test_signed_out_pages_have_no_badge(client):
    html = client.get(reverse("accounts:login")).content.decode()

    assert "data-unread-badge" not in html


# --- Preferences -----------------------------------------------------------------------------


def every_box(on: set[str]) -> dict[str, list[str]]:
    """The form as the page posts it: every box shown, the ``on`` ones checked."""
    shown = [f"{kind}.{channel}" for kind, channel in DEFAULT_PREFERENCES]
    return {"shown": shown, "on": [pair for pair in shown if pair in on]}


def test_the_preferences_form_shows_the_defaults(bob):
    response = signed_in(bob).get(reverse("notifications:settings"))

    html = response.content.decode()
    assert response.status_code == 200
    for (kind, channel), enabled in DEFAULT_PREFERENCES.items():
        box = re.search(rf'<input type="checkbox" name="on" value="{kind}\.{channel}"[^>]*>', html)
        assert box, (kind, channel)
        assert (" checked" in box.group(0)) is enabled
        assert f'for="pref-{kind}-{channel}"' in html
    assert "New followers: Email" in html
    assert 'value="digest.push"' not in html  # the digest is email only
    assert 'aria-current="page">Notifications</a>' in html


def test_the_preferences_form_saves(bob):
    client = signed_in(bob)

    response = client.post(
        reverse("notifications:settings"), every_box({"message.push", "new_follower.email"})
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("notifications:settings")
    saved = preferences_for(user=bob)
    assert saved["message"] == {"email": False, "push": True}
    assert saved["new_follower"] == {"email": True, "push": False}
    assert saved["digest"] == {"email": False}
    page = client.get(response["Location"]).content.decode()
    assert "Your notification settings have been saved." in page


def test_a_bad_preferences_post_changes_nothing(bob):
    form = every_box({"message.push"})
    form["shown"].append("gossip.email")

    response = signed_in(bob).post(reverse("notifications:settings"), form)

    assert response.status_code == 400
    assert "is not a kind of notification" in response.content.decode()
    assert not Preference.objects.exists()


def test_a_channel_a_kind_does_not_have_changes_nothing(bob):
    form = every_box(set())
    form["on"].append("digest.push")

    response = signed_in(bob).post(reverse("notifications:settings"), form)

    assert response.status_code == 400
    assert not Preference.objects.exists()


def test_the_push_section_only_when_the_server_has_a_key(bob, settings):
    client = signed_in(bob)
    settings.VAPID_PUBLIC_KEY = "BKey"
    html = client.get(reverse("notifications:settings")).content.decode()
    assert 'id="push-settings" data-vapid-key="BKey"' in html
    assert "Push notifications on this browser" in html

    settings.VAPID_PUBLIC_KEY = ""
    html = client.get(reverse("notifications:settings")).content.decode()
    assert "push-settings" not in html


# --- The service worker ----------------------------------------------------------------------


def test_the_service_worker_is_served_from_the_root_for_the_whole_site(client):
    response = client.get("/sw.js")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript"
    assert response["Service-Worker-Allowed"] == "/"
    assert response["Cache-Control"] == "no-cache"
    source = response.content.decode()
    assert 'addEventListener("push"' in source
    assert 'addEventListener("notificationclick"' in source
    assert client.post("/sw.js").status_code == 405
