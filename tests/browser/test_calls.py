"""Calls in real Chromium (fake camera and microphone) against a live Daphne server:
two people who follow each other (so no relay is forced; the test server has no TURN),
a video call placed from a profile and answered on another page, a declined call, and
a missed one that also rings in a tab opened while it rings; safety numbers that changed
are shown, and refuse the call for a verified contact."""

import re
import time
from collections.abc import Callable
from functools import partial

from playwright.sync_api import Locator, Page, expect

from calls.models import Call
from tests.browser.conftest import Site
from tests.browser.test_messaging import open_conversation_ready, person_with_keys

# The call view lingers a few seconds with the reason a call ended (calls.js LINGER_MS).
GONE_WITHIN = 12_000


def friends(site: Site) -> tuple[Page, Page]:
    """Alice and Bob follow each other; Alice's page is on Bob's profile."""
    alice = person_with_keys(site, "alice", "Alice Liddell")
    bob = person_with_keys(site, "bob")
    bob.goto("/@alice")
    bob.get_by_role("button", name="Follow", exact=True).click()
    expect(bob.get_by_role("button", name="Unfollow")).to_be_visible()
    alice.goto("/@bob")
    alice.get_by_role("button", name="Follow", exact=True).click()
    expect(alice.get_by_role("button", name="Unfollow")).to_be_visible()
    return alice, bob


def wait_until(check: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def decodes_video(page: Page) -> bool:
    """The other side's video arrives and decodes (the call's inbound-rtp stats)."""
    stats = page.evaluate("() => window.__parleyCalls.stats()")
    return bool(stats) and int(stats["framesDecoded"]) > 0


def incoming(page: Page) -> Locator:
    return page.get_by_role("dialog", name="Incoming call")


def call_panel(page: Page) -> Locator:
    return page.locator("dialog.call-panel")


def pin_another_key(page: Page, user_id: str, *, verified: bool) -> None:
    """As if `user_id` had a new identity key since this browser pinned (and maybe
    verified) theirs: the pin holds another key than the directory's."""
    page.evaluate(
        """async ([userId, verified]) => {
        const { updateAccount } = await import("/static/js/keystore.js");
        await updateAccount(document.body.dataset.userId, (record) => {
            record.pins[userId] = { aikPub: "A".repeat(43), verified, changed: false };
        });
    }""",
        [user_id, verified],
    )


def forget_pin(page: Page, user_id: str) -> None:
    page.evaluate(
        """async (userId) => {
        const { updateAccount } = await import("/static/js/keystore.js");
        await updateAccount(document.body.dataset.userId, (record) => {
            delete record.pins[userId];
        });
    }""",
        user_id,
    )


def test_video_call_from_a_profile_answered_on_another_page(site: Site) -> None:
    alice, bob = friends(site)
    # Bob is on his inbox, and has Alice's profile open in another tab: any signed-in
    # page rings.
    bob.goto("/")
    expect(bob.locator("body[data-ready='1']")).to_be_attached()
    tab = bob.context.new_page()
    tab.on("console", site.errors.console)
    tab.on("pageerror", site.errors.exception)
    tab.goto("/@alice")

    alice.get_by_role("button", name="Video call").click()
    ringing = incoming(bob)
    expect(ringing).to_be_visible()
    expect(ringing).to_contain_text("Alice Liddell (@alice) is calling (video call)")
    expect(ringing.get_by_role("button", name="Accept")).to_be_focused()
    expect(call_panel(alice).locator(".call-status")).to_have_text("Ringing…")
    expect(call_panel(alice).get_by_role("heading")).to_have_text("Video call with @bob")
    site.screenshot(bob, "call-incoming")
    call = Call.objects.get()
    assert (call.state, call.media, call.caller.handle, call.callee.handle) == (
        "ringing", "video", "alice", "bob",
    )  # fmt: skip

    expect(incoming(tab)).to_contain_text("Alice Liddell (@alice) is calling (video call)")

    # Answered in one tab, it stops ringing in the other at once.
    ringing.get_by_role("button", name="Accept").click()
    expect(ringing).to_be_hidden()
    expect(incoming(tab)).to_be_hidden()
    expect(call_panel(tab)).to_be_hidden()
    for page in (alice, bob):
        expect(call_panel(page).locator(".call-status")).to_have_text("Connected")
        # Real media both ways: the other side's video decodes and shows.
        wait_until(partial(decodes_video, page), "decoded remote video frames")
        page.wait_for_function("document.querySelector('video.remote')?.videoWidth > 0")
        expect(call_panel(page).get_by_role("timer")).to_have_text(re.compile(r"^0:0[1-9]$"))
        expect(call_panel(page).get_by_role("button", name="Camera off")).to_be_visible()
    call.refresh_from_db()
    assert call.state == "active" and call.answered_at is not None

    site.screenshot(alice, "call-in-progress")

    # Mute and camera off work on the local tracks, and back.
    panel = call_panel(alice)
    panel.get_by_role("button", name="Mute microphone").click()
    expect(panel.get_by_role("button", name="Unmute microphone")).to_be_visible()
    muted = "document.querySelector('video.local').srcObject.getAudioTracks()[0].enabled"
    assert alice.evaluate(muted) is False
    panel.get_by_role("button", name="Unmute microphone").click()
    assert alice.evaluate(muted) is True
    panel.get_by_role("button", name="Camera off").click()
    expect(panel.get_by_role("button", name="Camera on")).to_be_visible()
    panel.get_by_role("button", name="Camera on").click()

    expect(call_panel(alice).get_by_role("timer")).to_have_text(re.compile(r"^0:0[2-9]$"))
    panel.get_by_role("button", name="Hang up").click()
    for page in (alice, bob):
        expect(call_panel(page).locator(".call-status")).to_have_text(
            re.compile(r"^Call ended · 0:0[1-9]$")
        )
        expect(call_panel(page)).to_be_hidden(timeout=GONE_WITHIN)
        assert page.evaluate("() => window.__parleyCalls.stats()") is None
    call.refresh_from_db()
    assert (call.state, call.end_reason) == ("ended", "hangup")
    assert call.duration is not None and call.duration >= 1
    assert call.offers == {} and call.answer == ""  # the boxed SDPs are erased at the end

    # The history shows the call with its duration, on both sides.
    bob.get_by_role("link", name="Calls").click()
    row = bob.locator("tr.call-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Incoming video call")
    expect(row.get_by_role("link", name="Alice Liddell")).to_have_attribute("href", "/@alice")
    expect(row.locator("time[datetime^='PT']")).to_have_text(f"0:{call.duration:02d}")
    site.screenshot(bob, "call-history")
    # …and in the conversation of the two, among the messages.
    alice.goto("/@bob")
    alice.get_by_role("button", name="Message").click()
    open_conversation_ready(alice)
    expect(alice.locator(".call-entry")).to_have_text(
        re.compile(rf"^Outgoing video call · 0:{call.duration:02d} ")
    )


def test_declined_then_missed_call_also_rings_in_a_new_tab(site: Site) -> None:
    alice, bob = friends(site)
    bob.goto("/@bob")  # a page that does not go live itself
    alice_id = alice.evaluate("document.body.dataset.userId")
    bob_id = bob.evaluate("document.body.dataset.userId")

    # Bob, whom Alice verified, has another key now: she cannot call him until she
    # accepts it.
    pin_another_key(alice, bob_id, verified=True)
    alice.get_by_role("button", name="Voice call").click()
    panel = call_panel(alice)
    expect(panel.locator(".call-status")).to_have_text(
        "@bob's safety number changed. The call was not placed."
    )
    expect(panel.get_by_role("link", name="Compare safety numbers")).to_have_attribute(
        "href", "/settings/safety"
    )
    panel.get_by_role("button", name="Close").click()
    expect(panel).to_be_hidden()
    assert not Call.objects.exists()

    # Not verified: the call goes, with a warning on both sides; Bob had verified
    # Alice, so he may only decline.
    pin_another_key(alice, bob_id, verified=False)
    pin_another_key(bob, alice_id, verified=True)
    alice.get_by_role("button", name="Voice call").click()
    expect(panel.locator(".call-warning")).to_have_text(
        "@bob's safety number changed. Compare safety numbers"
    )
    ringing = incoming(bob)
    expect(ringing).to_contain_text("Alice Liddell (@alice) is calling (voice call)")
    expect(ringing).to_contain_text("@alice's safety number changed since you verified it")
    expect(ringing.get_by_role("button", name="Accept")).to_be_hidden()
    expect(ringing.get_by_role("button", name="Decline")).to_be_focused()
    ringing.get_by_role("button", name="Decline").click()
    forget_pin(bob, alice_id)  # Bob takes Alice's key as new from here on
    expect(ringing).to_be_hidden()
    expect(call_panel(alice).locator(".call-status")).to_have_text("Declined")
    expect(call_panel(alice)).to_be_hidden(timeout=GONE_WITHIN)
    assert Call.objects.get().state == "declined"

    # Both in their conversation; Alice calls from its header.
    alice.get_by_role("button", name="Message").click()
    open_conversation_ready(alice)
    conversation_id = alice.locator("#conversation").get_attribute("data-conversation-id")
    expect(alice.locator(".call-entry")).to_have_text(
        re.compile(r"^Outgoing voice call · Declined ")
    )
    bob.goto(f"/c/{conversation_id}")
    open_conversation_ready(bob)
    expect(bob.locator(".call-entry")).to_have_text(re.compile(r"^Incoming voice call · Declined "))

    alice.locator("#call-actions").get_by_role("button", name="Video call").click()
    expect(incoming(bob)).to_contain_text("is calling (video call)")
    expect(call_panel(alice).locator(".call-status")).to_have_text("Ringing…")
    # A tab Bob opens while it rings rings too (it asks for the calls ringing).
    tab = bob.context.new_page()
    tab.on("console", site.errors.console)
    tab.on("pageerror", site.errors.exception)
    tab.goto("/calls")
    expect(incoming(tab)).to_contain_text("Alice Liddell (@alice) is calling (video call)")

    # Alice gives up: a missed call for Bob, everywhere, live.
    call_panel(alice).get_by_role("button", name="Hang up").click()
    expect(call_panel(alice).locator(".call-status")).to_have_text("Call cancelled")
    expect(incoming(bob)).to_be_hidden()
    expect(incoming(tab)).to_be_hidden()
    missed = bob.locator(".call-entry.call-missed")
    expect(missed).to_have_text(re.compile(r"^Missed video call "))
    expect(alice.locator(".call-entry").last).to_have_text(
        re.compile(r"^Outgoing video call · Cancelled ")
    )
    # Calls and messages in the order they happened.
    bob.get_by_label("Message", exact=True).fill("sorry, missed you")
    bob.get_by_label("Message", exact=True).press("Enter")
    expect(bob.locator("#log > li").last).to_have_text(re.compile("sorry, missed you"))
    expect(bob.locator("#log > li.call-entry")).to_have_count(2)
    site.screenshot(bob, "conversation-calls")

    tab.reload()
    expect(tab.locator("tr.call-missed")).to_have_count(1)
    expect(tab.locator("tr.call-missed")).to_contain_text("Missed video call")
    expect(tab.locator("tr.call-row")).to_have_count(2)
    assert sorted(Call.objects.values_list("state", flat=True)) == ["cancelled", "declined"]
