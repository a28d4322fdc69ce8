"""The website's encrypted messaging in real Chromium, against a live Daphne server:
two people in two browsers, a third browser restoring from the recovery key, and the
Python reference client on the other end. Nothing readable may reach the server."""

import re
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import connection
from django.utils import timezone
from parley_client.client import ParleyClient
from playwright.sync_api import FilePayload, Page, Request, Route, expect

from accounts.tests.factories import make_user
from common.testing import database_dump
from tests.browser.conftest import Site

PASSWORD = "correct horse battery staple"


def sign_up(page: Page, handle: str, display_name: str = "") -> None:
    page.goto("/signup")
    page.get_by_label("Handle").fill(handle)
    page.get_by_label("E-mail").fill(f"{handle}@example.com")
    if display_name:
        page.get_by_label("Display name (optional)").fill(display_name)
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


def person_with_keys(site: Site, handle: str, display_name: str = "") -> Page:
    """A new account in its own browser, its keys set up."""
    page = site.new_page()
    sign_up(page, handle, display_name)
    create_keys(page)
    return page


def alice_opens_a_conversation_with_bob(site: Site) -> tuple[Page, Page]:
    """Alice and Bob in two browsers; Bob follows Alice, so her conversation with him
    is no request. Alice's page is on the conversation. Alice has a display name, Bob
    none: a conversation is called by the one, else by the other's handle."""
    alice = person_with_keys(site, "alice", "Alice Liddell")
    bob = person_with_keys(site, "bob")
    bob.goto("/@alice")
    bob.get_by_role("button", name="Follow").click()
    alice.goto("/@bob")
    alice.get_by_role("button", name="Message").click()
    open_conversation_ready(alice)
    expect(alice.locator("#conversation-title")).to_have_text("@bob")
    return alice, bob


def in_a_thread(work: Callable[[], None]) -> None:
    """Set-up through the services, off this thread: they publish events through
    async_to_sync, which Playwright's event loop in this thread refuses."""

    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(run).result()


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".msg-mine .msg-body", has_text=text)).to_be_visible()
    expect(box).to_have_value("")


def test_two_browsers_talk_live_restore_and_the_reference_client(site: Site) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"

    alice = site.new_page()
    sign_up(alice, "alice", "Alice Liddell")
    alice_code = create_keys(alice)
    site.screenshot(alice, "inbox-empty")

    bob = site.new_page(width=390, height=844)  # a phone-sized screen
    sign_up(bob, "bob", "Bob Builder")
    create_keys(bob)

    # Alice writes to Bob from his profile; Bob does not follow her: a request.
    alice.goto("/@bob")
    alice.get_by_role("button", name="Message").click()
    open_conversation_ready(alice)
    send(alice, f"hello bob {marker}")

    expect(bob.locator("#requests-count")).to_have_text("(1)")
    bob.get_by_role("tab", name=re.compile("Requests")).click()
    # Conversations are called by the other's display name (the API's display_name).
    bob.get_by_role("link", name=re.compile(r"^Alice Liddell(, 1 unread)?$")).click()
    open_conversation_ready(bob)
    expect(bob.locator("#conversation-title")).to_have_text("Alice Liddell")
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
    laptop.get_by_role("link", name=re.compile(r"^Bob Builder(, \d+ unread)?$")).click()
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


def png_bytes() -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def test_reply_edit_react_delete_attachments_report_timer_and_safety_numbers(
    site: Site,
) -> None:
    from messaging.models import Attachment, Message, Report

    marker = f"MARKER-{uuid.uuid4().hex}"
    alice, bob = alice_opens_a_conversation_with_bob(site)
    conversation_id = alice.locator("#conversation").get_attribute("data-conversation-id")
    bob.goto(f"/c/{conversation_id}")
    open_conversation_ready(bob)

    send(alice, f"first draft {marker}")
    drafted = bob.locator(".msg-theirs").filter(has_text=f"first draft {marker}")
    expect(drafted).to_be_visible()
    first = bob.locator(f"#{drafted.get_attribute('id')}")

    # Reply: the quote shows what is answered.
    first.get_by_role("button", name="Reply").click()
    expect(bob.locator("#reply-preview")).to_contain_text(f"first draft {marker}")
    send(bob, f"answering {marker}")
    expect(alice.locator(".msg-theirs .msg-quote")).to_have_text(f"you: first draft {marker}")

    # Edit: only the text changes, marked as edited, on both sides.
    alice.locator(".msg-mine").first.get_by_role("button", name="Edit").click()
    alice.get_by_label("Message", exact=True).fill(f"final text {marker}")
    alice.get_by_label("Message", exact=True).press("Enter")
    expect(first.locator(".msg-body")).to_have_text(f"final text {marker}")
    expect(first.locator(".msg-edited")).to_be_visible()

    # React.
    first.get_by_role("button", name="React").click()
    bob.get_by_role("button", name="👍").click()
    expect(alice.locator(".msg-mine .msg-reactions").first).to_have_text("👍 1")

    # Attachments: an image shown inline, a file to download; the server keeps ciphertext.
    downloads: list[str] = []

    def count_download(request: Request) -> None:
        if "/api/v1/attachments/" in request.url:
            downloads.append(request.url)

    bob.on("request", count_download)
    secret_file = f"file body {marker}".encode()
    files: list[FilePayload] = [
        {"name": "red.png", "mimeType": "image/png", "buffer": png_bytes()},
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": secret_file},
    ]
    alice.locator("#attach").set_input_files(files)
    send(alice, "two files")
    image = bob.get_by_role("img", name="red.png")
    expect(image).to_be_visible()
    assert image.evaluate("img => img.naturalWidth") == 40
    with bob.expect_download() as download:
        bob.get_by_role("button", name=re.compile("Download notes.txt")).click()
    assert download.value.suggested_filename == "notes.txt"
    with open(download.value.path(), "rb") as downloaded:
        assert downloaded.read() == secret_file
    for attachment in Attachment.objects.all():
        assert marker.encode() not in attachment.blob.read()
    assert Attachment.objects.count() == 2
    assert len(downloads) == 2  # the image once, the file on its click

    # Reacting renders the message again, not its attachments: nothing is downloaded again.
    with_files = bob.locator(".msg-theirs").filter(has_text="two files")
    react = with_files.get_by_role("button", name="React")
    expect(react).to_have_attribute("aria-expanded", "false")
    react.click()
    expect(react).to_have_attribute("aria-expanded", "true")
    bob.get_by_role("button", name="❤️").click()
    expect(react).to_have_attribute("aria-expanded", "false")
    sent_files = alice.locator(".msg-mine").filter(has_text="two files")
    expect(sent_files.locator(".msg-reactions")).to_have_text("❤️ 1")
    expect(image).to_be_visible()
    bob.wait_for_timeout(300)
    assert len(downloads) == 2
    site.screenshot(bob, "conversation-features")

    # Delete for everyone.
    send(alice, f"oops {marker}")
    oops = bob.locator(".msg-theirs").filter(has_text=f"oops {marker}")
    expect(oops).to_be_visible()
    alice.once("dialog", lambda dialog: dialog.accept())
    alice.locator(".msg-mine").filter(has_text=f"oops {marker}").get_by_role(
        "button", name="Delete for everyone"
    ).click()
    expect(bob.locator(".msg-deleted .msg-body")).to_have_text("This message was deleted.")

    # Report with the franking proof: moderators get exactly the reported payload.
    send(alice, "this one gets reported")
    reported = bob.locator(".msg-theirs").filter(has_text="this one gets reported")
    reported.get_by_role("button", name="Report").click()
    bob.get_by_label("Reason").select_option("spam")
    bob.locator("#report-dialog").get_by_role("button", name="Report").click()
    expect(bob.locator("#connection")).to_have_text(re.compile("Reported"))
    report = Report.objects.get()
    assert report.verified and "this one gets reported" in report.content

    # Disappearing messages: the timer applies to what is sent next.
    alice.get_by_label("Disappearing messages").select_option("30")
    expect(alice.locator("#connection")).to_have_text(re.compile("disappear"))
    send(alice, "gone soon")
    expect(bob.locator(".msg-theirs").filter(has_text="gone soon")).to_be_visible()
    assert Message.objects.filter(expires_at__isnull=False).count() == 1
    # Four weeks is past what one setTimeout can wait: the message must not go at once.
    with alice.expect_response(lambda response: response.request.method == "PATCH"):
        alice.get_by_label("Disappearing messages").select_option(label="4 weeks")
    send(alice, "kept for weeks")
    expect(bob.locator(".msg-theirs").filter(has_text="kept for weeks")).to_be_visible()
    alice.wait_for_timeout(500)
    expect(alice.locator(".msg-mine").filter(has_text="kept for weeks")).to_have_count(1)
    expect(bob.locator(".msg-theirs").filter(has_text="kept for weeks")).to_have_count(1)
    assert Message.objects.filter(expires_at__gt=timezone.now() + timedelta(days=27)).count() == 1

    # Safety numbers: the same 60 digits on both sides, with a QR code; mark verified.
    alice.goto("/settings/safety")
    bob.goto("/settings/safety")
    expect(alice.locator("body[data-ready='1']")).to_be_attached()
    expect(bob.locator("body[data-ready='1']")).to_be_attached()
    alice_number = alice.locator(".safety-number").inner_text()
    assert re.fullmatch(r"(\d{5} ){11}\d{5}", alice_number)
    assert bob.locator(".safety-number").inner_text() == alice_number
    expect(alice.get_by_role("img", name=re.compile("QR code"))).to_be_visible()
    alice.get_by_role("button", name="Mark as verified").click()
    expect(alice.locator(".verified-state")).to_have_text("✓ Verified")
    site.screenshot(alice, "settings-safety")

    assert not [value for value in database_dump() if marker.encode() in value]
    assert marker not in site.server.log()


def test_a_message_relabelled_as_another_members_or_keys_of_another_user_are_refused(
    site: Site,
) -> None:
    """The server can change a message's sender_id (it is not in the ciphertext's
    associated data); the sender's device must be that user's. And the key directory's
    answer must be for the user asked about."""
    alice, bob = alice_opens_a_conversation_with_bob(site)
    conversation_id = alice.locator("#conversation").get_attribute("data-conversation-id")
    send(alice, "signed by alice")
    bob.goto(f"/c/{conversation_id}")
    open_conversation_ready(bob)
    expect(bob.locator(".msg-theirs .msg-body")).to_have_text("signed by alice")

    opened = bob.evaluate(
        """async (conversationId) => {
        const { Parley } = await import("/static/js/parley.js");
        const { api } = await import("/static/js/api.js");
        const client = await Parley.load();
        const query = { device: client.deviceId };
        const page = await api("GET", `/conversations/${conversationId}/messages`, { query });
        const original = page.results[0];
        await client.directory(original.sender_id);
        // Alice's message, relabelled as Bob's own (it could then "edit" his messages).
        const relabelled = { ...original, sender_id: client.userId };
        const [mine, forged] = [await client.open(original), await client.open(relabelled)];
        return [mine.verified, mine.payload?.body, forged.verified, forged.payload];
    }""",
        conversation_id,
    )
    assert opened == [True, "signed by alice", False, None]

    alice_id = alice.evaluate("document.body.dataset.userId")
    bob_id = bob.evaluate("document.body.dataset.userId")

    def answer_for_bob(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "user_id": bob_id})

    bob.route(f"**/api/v1/keys/{alice_id}", answer_for_bob)
    refused = bob.evaluate(
        """async (aliceId) => {
        const { Parley } = await import("/static/js/parley.js");
        const client = await Parley.load();
        try {
            await client.directory(aliceId, { fresh: true });
            return "accepted";
        } catch (error) {
            return `${error.name}: ${error.message}`;
        }
    }""",
        alice_id,
    )
    assert refused == "KeysMismatch: The server answered with someone else's keys."
    bob.unroute(f"**/api/v1/keys/{alice_id}")


def test_the_inbox_shows_every_conversation_a_page_at_a_time(site: Site) -> None:
    """Beyond the first page of fifty, "Show more" reads the next; a live reload keeps
    what is shown, and the button goes once everything is."""
    from accounts.models import User
    from accounts.services import user_follow
    from messaging.services import conversation_get_or_create_direct
    from messaging.tests.support import person

    alice = person_with_keys(site, "alice")

    def set_up() -> None:
        me = User.objects.get(handle="alice")
        for number in range(52):
            pal = person(f"pal{number}", phones=0, history_key=False).user
            conversation_get_or_create_direct(user=me, other=pal)
        user_follow(follower=me, followee=make_user("newcomer"))

    in_a_thread(set_up)
    alice.goto("/")
    rows = alice.locator("#conversation-list .conversation-row")
    more = alice.get_by_role("button", name="Show more")
    expect(rows).to_have_count(50)
    more.click()
    expect(rows).to_have_count(52)
    expect(more).to_be_hidden()
    expect(rows.last).to_contain_text("@pal0")  # the oldest (the list is newest first)

    # Someone Alice follows opens a conversation with her, through the live server: her
    # list reloads live, with everything it showed and the new one first.
    newcomer = ParleyClient(site.server.url)
    try:
        newcomer.log_in("newcomer", PASSWORD, token_name="phone")
        newcomer.open_direct("alice")
    finally:
        newcomer.close()
    expect(rows.first).to_contain_text("@newcomer")
    expect(rows).to_have_count(53)
    expect(more).to_be_hidden()
