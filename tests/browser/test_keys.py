"""Keys in the browser: linking a new browser from an existing one with a short code,
a new recovery key replacing the old, and signing out unlinking the browser."""

import re

from parley_client.client import ParleyClient
from playwright.sync_api import expect

from accounts.models import Device
from tests.browser.conftest import Site
from tests.browser.test_messaging import PASSWORD, create_keys, log_in, person_with_keys, sign_up


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
