"""The page keeps working across a lost connection: it reconnects with backoff and
catches up by sync, with no reload."""

import re

from playwright.sync_api import expect

from tests.browser.conftest import Site
from tests.browser.test_messaging import (
    alice_opens_a_conversation_with_bob,
    open_conversation_ready,
    send,
)


def test_lost_connection_reconnects_and_catches_up_without_reload(site: Site) -> None:
    alice, bob = alice_opens_a_conversation_with_bob(site)
    send(alice, "before the cut")
    bob.get_by_role("link", name="Messages").click()
    expect(bob.locator(".conversation-row.unread")).to_have_count(1)
    bob.get_by_role("link", name=re.compile(r"^Alice Liddell, 1 unread$")).click()
    open_conversation_ready(bob)
    bob.evaluate("window.__sameDocument = true")

    bob.context.set_offline(True)
    expect(bob.locator("#connection")).to_have_text(re.compile("Offline|Reconnecting"))
    send(alice, "while you were away")
    send(alice, "and one more")
    bob.context.set_offline(False)

    expect(bob.locator(".msg-theirs .msg-body")).to_have_text(
        ["before the cut", "while you were away", "and one more"], timeout=20_000
    )
    expect(bob.locator("#connection")).to_have_text("")
    assert bob.evaluate("window.__sameDocument") is True  # caught up without a reload
    # Live again after the reconnect.
    send(alice, "live again")
    expect(bob.locator(".msg-theirs .msg-body").last).to_have_text("live again")
