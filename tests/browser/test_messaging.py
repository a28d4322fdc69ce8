"""The website's encrypted messaging in real Chromium, against a live Daphne server:
two people in two browsers, a third browser restoring from the recovery key, and the
Python reference client on the other end. Nothing readable may reach the server."""

import re
import uuid

from parley_client.client import ParleyClient
from playwright.sync_api import Page, expect

from common.testing import database_dump
from tests.browser.conftest import Site

PASSWORD = "correct horse battery staple"


def sign_up(page: Page, handle: str) -> None:
    page.goto("/signup")
    page.get_by_label("Handle").fill(handle)
    page.get_by_label("E-mail").fill(f"{handle}@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()


def create_keys(page: Page) -> str:
    """The first-run screen of a new account: create keys, note the recovery key."""
    expect(page).to_have_url(re.compile(r"/setup"))
    page.get_by_role("button", name="Create my keys").click()
    code = page.locator("#recovery-code")
    expect(code).to_have_text(re.compile(r"\w{4}"))
    recovery_code = code.inner_text()
    page.get_by_label("I wrote it down").check()
    page.get_by_role("link", name="Continue").click()
    expect(page.locator("body[data-ready='1']")).to_be_attached()
    return recovery_code


def log_in(page: Page, handle: str) -> None:
    page.goto("/login")
    page.get_by_label("Handle or e-mail").fill(handle)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def open_conversation_ready(page: Page) -> None:
    expect(page.locator("#conversation[data-ready='1']")).to_be_attached()


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".msg-mine .msg-body", has_text=text)).to_be_visible()
    expect(box).to_have_value("")


def test_two_browsers_talk_live_restore_and_the_reference_client(site: Site) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"

    alice = site.new_page()
    sign_up(alice, "alice")
    alice_code = create_keys(alice)
    site.screenshot(alice, "inbox-empty")

    bob = site.new_page(width=390, height=844)  # a phone-sized screen
    sign_up(bob, "bob")
    create_keys(bob)

    # Alice writes to Bob from his profile; Bob does not follow her: a request.
    alice.goto("/@bob")
    alice.get_by_role("button", name="Message").click()
    open_conversation_ready(alice)
    send(alice, f"hello bob {marker}")

    expect(bob.locator("#requests-count")).to_have_text("(1)")
    bob.get_by_role("tab", name=re.compile("Requests")).click()
    bob.get_by_role("link", name=re.compile("Alice|alice")).click()
    open_conversation_ready(bob)
    expect(bob.locator(".msg-theirs .msg-body")).to_have_text(f"hello bob {marker}")
    site.screenshot(bob, "conversation-request-phone")
    bob.get_by_role("button", name="Accept").click()
    expect(bob.locator("#request-bar")).to_be_hidden()

    # Both ways, live; typing is shown, and read marks come back.
    bob.get_by_label("Message", exact=True).press_sequentially("hi al")
    expect(alice.locator("#typing")).to_have_text("@bob is typing…")
    send(bob, f"hi alice {marker}")
    expect(alice.locator(".msg-theirs .msg-body")).to_have_text(f"hi alice {marker}")
    expect(alice.locator(".msg-mine .msg-status")).to_have_text("Read")
    send(alice, "second one")
    expect(bob.locator(".msg-theirs .msg-body").last).to_have_text("second one")
    expect(alice.locator(".msg-mine .msg-status").last).to_have_text("Read")
    site.screenshot(alice, "conversation")

    # Bob reloads: the history is still there, decrypted again from the server's copy.
    bob.reload()
    open_conversation_ready(bob)
    expect(bob.locator(".msg .msg-body")).to_have_text(
        [f"hello bob {marker}", f"hi alice {marker}", "second one"]
    )

    # Alice on a third browser: log in, restore with the recovery key, read the history.
    laptop = site.new_page()
    log_in(laptop, "alice")
    expect(laptop).to_have_url(re.compile(r"/setup"))
    expect(laptop.get_by_role("heading", name="Read your messages in this browser")).to_be_visible()
    site.screenshot(laptop, "setup-restore")
    laptop.get_by_label("Recovery key or passphrase").fill(alice_code)
    laptop.get_by_role("button", name="Restore").click()
    expect(laptop.locator("body[data-ready='1']")).to_be_attached()
    laptop.get_by_role("link", name=re.compile("Bob|bob")).click()
    open_conversation_ready(laptop)
    expect(laptop.locator(".msg .msg-body")).to_have_text(
        [f"hello bob {marker}", f"hi alice {marker}", "second one"]
    )

    # The Python reference client writes to Alice; she reads it in the browser and answers.
    carol = ParleyClient(site.server.url)
    carol.sign_up("carol", "carol@example.com", PASSWORD, token_name="cli")
    carol.set_up_keys("cli")
    conversation_id = carol.open_direct("alice")
    carol.send_text(conversation_id, f"from python {marker}")
    alice.goto(f"/c/{conversation_id}")
    open_conversation_ready(alice)
    expect(alice.locator(".msg-theirs .msg-body")).to_have_text(f"from python {marker}")
    alice.get_by_role("button", name="Accept").click()
    send(alice, f"from the browser {marker}")
    replies = [r for r in carol.sync() if r.message["sender_id"] != carol.user_id]
    assert [(r.verified, r.text) for r in replies] == [(True, f"from the browser {marker}")]

    # Nothing readable reached the server: no table, no log holds the marker.
    assert not [value for value in database_dump() if marker.encode() in value]
    assert marker not in site.server.log()
