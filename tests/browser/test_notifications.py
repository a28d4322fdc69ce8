"""Notifications in real Chromium against a live Daphne server: the nav badge counts
live, the list says who wrote (never what), opening one leads to the conversation
and reads it, and the preferences page saves. Chromium here has no network, so push
is not subscribed for real: the push section is only checked to offer itself, and
pushes are handed to the service worker through the DevTools protocol."""

import json
import re
import time
import uuid
from typing import Any

from playwright.sync_api import Locator, Page, expect

from accounts.models import User
from accounts.tests.factories import make_user
from common.testing import database_dump
from messaging.models import Membership
from notifications.channels import push_payload
from notifications.models import Kind, Notification
from notifications.selectors import preferences_for
from tests.browser.conftest import Site
from tests.browser.test_messaging import (
    alice_opens_a_conversation_with_bob,
    open_conversation_ready,
    person_with_keys,
    send,
)


def nav_link(page: Page) -> Locator:
    return page.locator("a[data-unread-link]")


def badge(page: Page) -> Locator:
    return page.locator("[data-unread-badge]")


def test_the_badge_counts_live_and_the_list_leads_to_the_conversation(site: Site) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    alice, bob = alice_opens_a_conversation_with_bob(site)
    conversation_id = alice.locator("#conversation").get_attribute("data-conversation-id")
    assert conversation_id

    # Bob is elsewhere on the site, nothing unread.
    bob.goto("/calls")
    expect(badge(bob)).to_be_hidden()
    expect(nav_link(bob)).to_have_attribute("aria-label", "Notifications")

    # Alice writes: Bob's badge counts it without a reload.
    send(alice, f"hello bob {marker}")
    expect(badge(bob)).to_have_text("1")
    expect(badge(bob)).to_be_visible()
    expect(nav_link(bob)).to_have_attribute("aria-label", "Notifications, 1 unread")

    # The list says who wrote, never what.
    nav_link(bob).click()
    expect(bob).to_have_url(re.compile(r"/notifications$"))
    item = bob.locator(".notification-unread")
    expect(item).to_have_count(1)
    expect(item.locator(".notification-title")).to_have_text("Unread: New message from @alice")
    expect(item.locator(".notification-body")).to_have_text("A new message from @alice.")
    expect(bob.get_by_role("button", name="Mark all as read")).to_be_visible()

    # Another message while Bob looks at the list: the same line counts it, live.
    send(alice, f"and another {marker}")
    expect(item.locator(".notification-body")).to_have_text("2 new messages from @alice.")
    expect(bob.locator(".notification")).to_have_count(1)
    expect(badge(bob)).to_have_text("1")
    site.screenshot(bob, "notifications")
    assert marker not in bob.content()

    # Opening it reads it and leads to the conversation; the badge is back to none.
    item.get_by_role("link").click()
    expect(bob).to_have_url(re.compile(rf"/c/{conversation_id}$"))
    open_conversation_ready(bob)
    expect(bob.locator(".msg-theirs .msg-body").last).to_have_text(f"and another {marker}")
    expect(badge(bob)).to_be_hidden()
    expect(nav_link(bob)).to_have_attribute("aria-label", "Notifications")
    bob_user = User.objects.get(handle="bob")
    assert not Notification.objects.filter(user=bob_user, read_at__isnull=True).exists()

    # Muting the conversation: for an hour, then until unmuted (kept over a reload), then not.
    mute = bob.get_by_label("Mute notifications")
    mute.select_option(label="1 hour")
    expect(bob.locator("#muted-until")).to_have_text(re.compile(r"^Muted until \S"))
    membership = Membership.objects.get(user=bob_user, conversation_id=conversation_id)
    assert membership.is_muted
    mute.select_option(label="Until I unmute")
    expect(bob.locator("#muted-until")).to_have_text("Muted until you unmute")
    site.screenshot(bob, "conversation-muted")
    bob.reload()
    open_conversation_ready(bob)
    expect(mute).to_have_value("muted")
    expect(bob.locator("#muted-until")).to_have_text("Muted until you unmute")
    mute.select_option(label="Unmute")
    expect(bob.locator("#muted-until")).to_have_text("")
    expect(mute).to_have_value("off")
    membership.refresh_from_db()
    assert membership.muted_until is None

    # Back on the list, it shows as read.
    bob.goto("/notifications")
    expect(bob.locator(".notification")).to_have_count(1)
    expect(bob.locator(".notification-unread")).to_have_count(0)
    expect(bob.get_by_role("button", name="Mark all as read")).to_be_hidden()

    # Nothing readable reached the server.
    assert not [value for value in database_dump() if marker.encode() in value]
    assert marker not in site.server.log()


def test_preferences_save_and_the_push_section_offers_itself(site: Site) -> None:
    _alice, bob = alice_opens_a_conversation_with_bob(site)
    bob.context.grant_permissions(["notifications"])

    bob.goto("/settings/notifications")
    expect(bob.get_by_role("heading", name="Notifications", exact=True)).to_be_visible()
    email = bob.get_by_label("New messages: Email")
    expect(email).to_be_checked()
    email.uncheck()
    bob.get_by_label("New followers: Email").check()
    bob.get_by_role("button", name="Save").click()

    expect(bob.locator(".messages")).to_contain_text("Your notification settings have been saved.")
    expect(bob.get_by_label("New messages: Email")).not_to_be_checked()
    expect(bob.get_by_label("New followers: Email")).to_be_checked()
    saved = preferences_for(user=User.objects.get(handle="bob"))
    assert saved["message"]["email"] is False
    assert saved["new_follower"]["email"] is True
    assert saved["message"]["push"] is True

    # This browser can take pushes, and has none yet.
    push = bob.locator("#push-settings")
    expect(push.get_by_role("status")).to_have_text("Push notifications are off for this browser.")
    expect(push.get_by_role("button", name="Turn on")).to_be_visible()
    expect(push.get_by_role("button", name="Turn off")).to_be_hidden()
    site.screenshot(bob, "settings-notifications")


def shown_notifications(page: Page) -> list[dict[str, Any]]:
    return page.evaluate(
        """async () => {
        const registration = await navigator.serviceWorker.ready;
        return (await registration.getNotifications()).map(
            (n) => ({ title: n.title, body: n.body, tag: n.tag, url: n.data?.url }));
    }"""
    )


def test_the_service_worker_shows_pushes_and_opens_only_this_site(site: Site) -> None:
    bob = person_with_keys(site, "bob")
    bob.context.grant_permissions(["notifications"])
    bob.goto("/notifications")
    scope = bob.evaluate(
        """async () => {
        await navigator.serviceWorker.register("/sw.js", { scope: "/" });
        return (await navigator.serviceWorker.ready).scope;
    }"""
    )
    assert scope == f"{site.server.url}/"

    # A push as the push service would hand it over (no network needed).
    devtools = bob.context.new_cdp_session(bob)
    registrations: list[dict[str, Any]] = []
    devtools.on(
        "ServiceWorker.workerRegistrationUpdated",
        lambda event: registrations.extend(event["registrations"]),
    )
    devtools.send("ServiceWorker.enable")
    deadline = time.monotonic() + 10
    while not any(r["scopeURL"] == scope for r in registrations):
        assert time.monotonic() < deadline, "the service worker registration never showed"
        bob.wait_for_timeout(100)
    registration_id = next(r["registrationId"] for r in registrations if r["scopeURL"] == scope)

    def push(data: str) -> dict[str, Any]:
        """Hand one push to the worker; answers the notification it shows. DevTools
        drops a push now and then (before the worker takes it): it is handed over
        again after a while."""
        before = {n["title"] for n in shown_notifications(bob)}
        for _attempt in range(4):
            devtools.send(
                "ServiceWorker.deliverPushMessage",
                {"origin": site.server.url, "registrationId": registration_id, "data": data},
            )
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                new = [n for n in shown_notifications(bob) if n["title"] not in before]
                if new:
                    return new[0]
                bob.wait_for_timeout(100)
        raise AssertionError(f"nothing shown for {data!r}")

    # The server's own payload for a notification.
    follow = Notification.objects.create(
        user=User.objects.get(handle="bob"), kind=Kind.NEW_FOLLOWER, actor=make_user("alice")
    )
    assert push(push_payload(follow)) == {
        "title": "@alice follows you",
        "body": "@alice started following you.",
        "tag": f"notification-{follow.pk}",
        "url": "/@alice",
    }
    # One it cannot read still shows something (pushes must be visible).
    assert push("not json") == {
        "title": "Parley: something new",
        "body": "Open Parley to see it.",
        "tag": "parley",
        "url": "/notifications",
    }
    # A link to another site is never opened: the click goes to the notifications.
    shown = push(json.dumps({"title": "Click me", "body": "", "url": "https://example.com/"}))
    assert shown["url"] == "/notifications"
