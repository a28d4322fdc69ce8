"""Keys in the browser: linking a new browser from an existing one with a short code,
a new recovery key replacing the old, a passphrase instead, signing out unlinking the
browser (from every sign-out form, even after a half-finished setup), and two tabs
keeping each other's changes to the key store."""

import re

from parley_client.client import ParleyClient
from playwright.sync_api import Page, expect

from accounts.models import Device
from tests.browser.conftest import Site
from tests.browser.test_messaging import (
    PASSWORD,
    alice_opens_a_conversation_with_bob,
    create_keys,
    log_in,
    open_conversation_ready,
    person_with_keys,
    send,
    sign_up,
)

PASSPHRASE = "a passphrase long enough for the tests"


def stored_accounts(page: Page) -> int:
    """How many account records this browser's key store holds."""
    count: int = page.evaluate(
        """() => new Promise((resolve) => {
        const open = indexedDB.open("parley");
        open.onsuccess = () => {
            const get = open.result.transaction("accounts").objectStore("accounts").getAll();
            get.onsuccess = () => resolve(get.result.length);
        };
    })"""
    )
    return count


def stored_pins(page: Page, user_id: str) -> dict[str, dict[str, object]]:
    pins: dict[str, dict[str, object]] = page.evaluate(
        """async (userId) => {
        const { loadAccount } = await import("/static/js/keystore.js");
        return (await loadAccount(userId)).pins;
    }""",
        user_id,
    )
    return pins


def test_link_a_new_browser_with_a_short_code_then_it_reads_the_history(site: Site) -> None:
    old = person_with_keys(site, "alice")
    bob = ParleyClient(site.server.url)
    bob.sign_up("bob", "bob@example.com", PASSWORD, token_name="cli")
    bob.set_up_keys("cli")
    conversation_id = bob.open_direct("alice")
    bob.send_text(conversation_id, "sent before the link")

    new = site.new_page()
    log_in(new, "alice")
    expect(new).to_have_url(re.compile(r"/setup"))
    old.goto("/settings/devices")
    expect(old.locator(".this-device")).to_be_visible()
    new.get_by_role("button", name="Link from another device").click()

    new_code = new.locator("#link-code")
    expect(new_code).to_have_text(re.compile(r"^\d{6}$"), timeout=30_000)
    old_code = old.locator("#link-approve-code")
    expect(old_code).to_have_text(re.compile(r"^\d{6}$"), timeout=30_000)
    assert old_code.inner_text() == new_code.inner_text()
    site.screenshot(old, "settings-devices-link")
    old.get_by_role("button", name="The codes match").click()

    expect(new.locator("body[data-ready='1']")).to_be_attached(timeout=30_000)
    assert Device.objects.filter(user__handle="alice", revoked_at__isnull=True).count() == 2
    new.goto(f"/c/{conversation_id}")
    expect(new.locator("#conversation[data-ready='1']")).to_be_attached()
    expect(new.locator(".msg-theirs .msg-body")).to_have_text("sent before the link")


def test_new_recovery_key_replaces_the_old_and_sign_out_unlinks(site: Site) -> None:
    first = site.new_page()
    sign_up(first, "alice")
    old_code = create_keys(first)
    first.goto("/settings/keys")
    first.once("dialog", lambda dialog: dialog.accept())
    first.get_by_role("button", name="Make a new recovery key").click()
    new_code = first.locator("#recovery-code")
    expect(new_code).to_have_text(re.compile(r"\w{4}"))
    fresh_code = new_code.inner_text()
    assert fresh_code != old_code
    site.screenshot(first, "settings-recovery-key")
    first.get_by_label("I wrote it down").check()
    first.get_by_role("button", name="Done").click()

    # Signing out revokes this browser's device and erases its keys here.
    first.get_by_role("button", name="Log out").click()
    expect(first).to_have_url(re.compile(r"/login|/$"))
    assert not Device.objects.filter(user__handle="alice", revoked_at__isnull=True).exists()
    assert (
        first.evaluate(
            """() => new Promise((resolve) => {
            const open = indexedDB.open("parley");
            open.onsuccess = () => {
                const get = open.result.transaction("accounts").objectStore("accounts").getAll();
                get.onsuccess = () => resolve(get.result.length);
            };
        })"""
        )
        == 0
    )

    log_in(first, "alice")
    first.get_by_label("Recovery key or passphrase").fill(old_code)
    first.get_by_role("button", name="Restore").click()
    expect(first.locator("#restore-error")).to_have_text(re.compile("does not open"))
    first.get_by_label("Recovery key or passphrase").fill(fresh_code)
    first.get_by_role("button", name="Restore").click()
    expect(first.locator("body[data-ready='1']")).to_be_attached()

    # A passphrase instead: the form is cleared once the backup opens with it.
    first.goto("/settings/keys")
    first.get_by_label("New passphrase (at least 16 characters)").fill(PASSPHRASE)
    first.get_by_label("Again", exact=True).fill(PASSPHRASE)
    first.get_by_role("button", name="Use this passphrase").click()
    expect(first.locator("#keys-status")).to_have_text(
        re.compile("now opens with this passphrase"), timeout=60_000
    )
    expect(first.get_by_label("New passphrase (at least 16 characters)")).to_have_value("")
    expect(first.locator("#passphrase-error")).to_have_text("")


def test_two_tabs_keep_each_others_changes_and_the_logout_page_unlinks(site: Site) -> None:
    alice, bob = alice_opens_a_conversation_with_bob(site)
    conversation_id = alice.locator("#conversation").get_attribute("data-conversation-id")
    alice_id = alice.evaluate("document.body.dataset.userId")
    bob_id = bob.evaluate("document.body.dataset.userId")

    # A second tab of Alice's browser marks Bob verified; the first tab stays open.
    second = alice.context.new_page()
    second.on("console", site.errors.console)
    second.on("pageerror", site.errors.exception)
    second.goto("/settings/safety")
    expect(second.locator("body[data-ready='1']")).to_be_attached()
    second.get_by_role("button", name="Mark as verified").click()
    expect(second.locator(".verified-state")).to_have_text("✓ Verified")

    # The first tab, loaded before the mark, catches up after a lost connection: it
    # stores its sync cursor, and only that.
    bob.goto(f"/c/{conversation_id}")
    open_conversation_ready(bob)
    alice.context.set_offline(True)
    expect(alice.locator("#connection")).to_have_text(re.compile("Offline|Reconnecting"))
    send(bob, "while the first tab was offline")
    alice.context.set_offline(False)
    expect(alice.locator(".msg-theirs .msg-body")).to_have_text(
        "while the first tab was offline", timeout=20_000
    )
    assert stored_pins(second, alice_id)[bob_id]["verified"] is True

    # The /logout page's own form signs out and unlinks too.
    alice.close()
    second.goto("/logout")
    second.get_by_role("main").get_by_role("button", name="Log out").click()
    expect(second).to_have_url(re.compile(r"/login|/$"))
    assert not Device.objects.filter(user__handle="alice", revoked_at__isnull=True).exists()
    assert stored_accounts(second) == 0


def test_signing_out_erases_the_keys_of_a_half_finished_setup(site: Site) -> None:
    page = site.new_page()
    sign_up(page, "alice")
    expect(page).to_have_url(re.compile(r"/setup"))
    expect(page.get_by_role("button", name="Create my keys")).to_be_visible()
    # What a first setup that stopped before registering the device leaves behind.
    page.evaluate(
        """async (userId) => {
        const { saveAccount } = await import("/static/js/keystore.js");
        const [aikSeed, hkSecret] = ["A".repeat(43), "B".repeat(43)];
        await saveAccount({ userId, aikSeed, hkSecret, pins: {}, device: null, syncCursor: null });
    }""",
        page.evaluate("document.body.dataset.userId"),
    )
    assert stored_accounts(page) == 1
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login|/$"))
    assert stored_accounts(page) == 0
