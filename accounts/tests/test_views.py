"""The accounts website: sign-up, sign-in, settings, profiles and search."""

import io
import re

import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image

from accounts import services
from accounts.models import Block, CallPolicy, DmPolicy, Follow, Mute, User

pytestmark = pytest.mark.django_db

PASSWORD = "correct horse battery staple"
PHONE = "+14155550123"


def make_user(handle: str, **extra) -> User:
    return services.user_sign_up(
        handle=handle, email=f"{handle.lower()}@example.com", password=PASSWORD, **extra
    )


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user, backend="accounts.backends.HandleOrEmailBackend")
    return client


def signup_data(**overrides: str) -> dict[str, str]:
    data = {
        "handle": "alice",
        "email": "alice@example.com",
        "display_name": "Alice",
        "password": PASSWORD,
        "password2": PASSWORD,
    }
    data.update(overrides)
    return data


def session_user_id(client: Client) -> str | None:
    return client.session.get("_auth_user_id")


# --- Sign-up ---------------------------------------------------------------------------------


def test_signup_creates_the_user_and_signs_in(client):
    response = client.post(reverse("accounts:signup"), signup_data())

    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    user = User.objects.get(handle="alice")
    assert user.display_name == "Alice"
    assert session_user_id(client) == str(user.pk)
    home = client.get(reverse("home"))
    assert "Messages" in home.content.decode()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"handle": "not a handle!"}, "A handle is 1 to 15 letters, digits or underscores."),
        ({"handle": "Admin"}, "That handle is reserved."),
        ({"password": "short", "password2": "short"}, "This password is too short."),
        ({"password": "password123", "password2": "password123"}, "too common"),
        ({"password2": "correct horse battery stable"}, "The two passwords do not match."),
        ({"email": "not-an-email"}, "Enter a valid email address."),
    ],
)
def test_signup_refusals_are_shown_on_the_form(client, overrides, message):
    response = client.post(reverse("accounts:signup"), signup_data(**overrides))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert not User.objects.exists()
    assert session_user_id(client) is None


def test_signup_refuses_a_taken_handle_in_another_case(client):
    make_user("alice")

    response = client.post(
        reverse("accounts:signup"), signup_data(handle="ALICE", email="other@example.com")
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert "That handle is taken." in html
    # The error sits by the handle field and the input points at it.
    assert 'id="id_handle_error"' in html
    assert re.search(r'<input[^>]*aria-describedby="[^"]*id_handle_error', html)
    assert User.objects.count() == 1


# --- Sign-in and sign-out --------------------------------------------------------------------


@pytest.mark.parametrize("login", ["ALICE", "@Alice", "Alice@Example.com"])
def test_login_by_handle_in_any_case_or_by_email(client, login):
    user = make_user("alice")

    response = client.post(reverse("accounts:login"), {"login": login, "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == reverse("home")
    assert session_user_id(client) == str(user.pk)


def test_login_with_a_wrong_password_shows_an_error(client):
    make_user("alice")

    response = client.post(
        reverse("accounts:login"), {"login": "alice", "password": "wrong horse battery staple"}
    )

    assert response.status_code == 200
    assert "That handle or e-mail and password do not match." in response.content.decode()
    assert session_user_id(client) is None


def test_login_locks_out_after_five_failures_even_with_the_right_password(client):
    make_user("alice")
    for _ in range(5):
        client.post(reverse("accounts:login"), {"login": "alice", "password": "wrong password!"})

    response = client.post(reverse("accounts:login"), {"login": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert "Too many failed attempts" in response.content.decode()
    assert session_user_id(client) is None


def test_login_of_a_suspended_account_says_why(client):
    from datetime import timedelta

    from django.utils import timezone

    user = make_user("alice")
    services.user_suspend(user=user, until=timezone.now() + timedelta(days=1))

    response = client.post(reverse("accounts:login"), {"login": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert "This account is suspended until" in response.content.decode()
    assert session_user_id(client) is None


def test_pages_need_sign_in_and_login_honours_a_safe_next(client):
    make_user("alice")
    search = reverse("accounts:search")

    response = client.get(search)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('accounts:login')}?next={search}"

    page = client.get(f"{reverse('accounts:login')}?next={search}")
    assert f'name="next" value="{search}"' in page.content.decode()
    response = client.post(
        reverse("accounts:login"), {"login": "alice", "password": PASSWORD, "next": search}
    )
    assert response["Location"] == search


def test_login_ignores_a_next_to_another_site(client):
    make_user("alice")

    response = client.post(
        f"{reverse('accounts:login')}?next=https://evil.example/",
        {"login": "alice", "password": PASSWORD},
    )

    assert response["Location"] == reverse("home")


def test_logout_needs_a_post_and_ends_the_session(client):
    make_user("alice")
    client.post(reverse("accounts:login"), {"login": "alice", "password": PASSWORD})

    confirm = client.get(reverse("accounts:logout"))
    assert confirm.status_code == 200
    assert session_user_id(client) is not None

    response = client.post(reverse("accounts:logout"))
    assert response.status_code == 302
    assert session_user_id(client) is None
    assert client.get(reverse("accounts:search")).status_code == 302


# --- Profiles and the social graph -----------------------------------------------------------


def test_profile_page_shows_the_user(client):
    alice = make_user("alice", display_name="Alice A.")
    services.user_update_profile(user=alice, bio="I like <b>tea</b>.")
    bob = make_user("bob")
    services.user_follow(follower=bob, followee=alice)

    response = signed_in(bob).get(reverse("accounts:profile", args=["ALICE"]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "Alice A." in html
    assert "@alice" in html
    assert "I like &lt;b&gt;tea&lt;/b&gt;." in html
    assert "<strong>1</strong> follower" in html
    assert "alice@example.com" not in html


def test_follow_unfollow_mute_and_block_buttons_change_state():
    alice = make_user("alice")
    bob = make_user("bob")
    client = signed_in(bob)
    profile = reverse("accounts:profile", args=["alice"])

    page = client.post(reverse("accounts:follow", args=["alice"]), follow=True)
    assert page.redirect_chain == [(profile, 302)]
    assert Follow.objects.filter(follower=bob, followee=alice).exists()
    html = page.content.decode()
    assert "You now follow @alice." in html
    assert ">Unfollow</button>" in html

    page = client.post(reverse("accounts:unfollow", args=["alice"]), follow=True)
    assert not Follow.objects.filter(follower=bob, followee=alice).exists()
    assert ">Follow</button>" in page.content.decode()

    page = client.post(reverse("accounts:mute", args=["alice"]), follow=True)
    assert Mute.objects.filter(muter=bob, muted=alice).exists()
    assert ">Unmute</button>" in page.content.decode()
    client.post(reverse("accounts:unmute", args=["alice"]))
    assert not Mute.objects.filter(muter=bob, muted=alice).exists()

    page = client.post(reverse("accounts:block", args=["alice"]), follow=True)
    assert Block.objects.filter(blocker=bob, blocked=alice).exists()
    html = page.content.decode()
    assert ">Unblock</button>" in html
    assert ">Follow</button>" not in html

    client.post(reverse("accounts:unblock", args=["alice"]))
    assert not Block.objects.filter(blocker=bob, blocked=alice).exists()


def test_social_actions_are_post_only():
    make_user("alice")
    client = signed_in(make_user("bob"))

    assert client.get(reverse("accounts:follow", args=["alice"])).status_code == 405
    assert not Follow.objects.exists()


def test_a_refused_action_is_shown_as_a_message():
    bob = make_user("bob")

    page = signed_in(bob).post(reverse("accounts:follow", args=["bob"]), follow=True)

    assert "You cannot do that to yourself." in page.content.decode()
    assert not Follow.objects.exists()


def test_a_blocked_viewer_gets_404_on_the_blockers_profile():
    alice = make_user("alice")
    bob = make_user("bob")
    services.user_block(blocker=alice, blocked=bob)
    client = signed_in(bob)

    response = client.get(reverse("accounts:profile", args=["alice"]))
    assert response.status_code == 404
    assert "alice" not in response.content.decode().lower()
    assert client.post(reverse("accounts:follow", args=["alice"])).status_code == 404
    assert not Follow.objects.exists()
    # The blocker still sees whom they blocked, to unblock.
    assert signed_in(alice).get(reverse("accounts:profile", args=["bob"])).status_code == 200


def test_profile_explains_why_messages_and_calls_are_off():
    alice = make_user("alice")
    services.user_update_privacy(
        user=alice, dm_policy=DmPolicy.FOLLOWING, call_policy=CallPolicy.NOBODY
    )

    html = signed_in(make_user("bob")).get(reverse("accounts:profile", args=["alice"])).content
    html_text = html.decode()

    assert "@alice only accepts messages from people they follow." in html_text
    assert "@alice does not accept calls." in html_text
    assert 'aria-disabled="true"' in html_text


def test_404_page_echoes_nothing_from_the_request():
    client = signed_in(make_user("bob"))

    response = client.get("/@nobody_here?x=<script>alert(1)</script>")

    assert response.status_code == 404
    html = response.content.decode()
    assert "nobody_here" not in html
    assert "alert" not in html


# --- Search ----------------------------------------------------------------------------------


def test_search_finds_by_handle_or_name_prefix():
    make_user("alice", display_name="Wonder")
    make_user("alfred")
    make_user("bob", display_name="Alpha Bob")
    make_user("carol")
    client = signed_in(make_user("viewer"))

    html = client.get(reverse("accounts:search"), {"q": "@al"}).content.decode()

    for handle in ("alice", "alfred", "bob"):
        assert f'href="{reverse("accounts:profile", args=[handle])}"' in html
    assert "@carol" not in html


def test_search_excludes_blocked_users_both_ways():
    viewer = make_user("viewer")
    blocked_by_viewer = make_user("sam_blocked")
    blocker_of_viewer = make_user("sam_blocker")
    make_user("sam_friend")
    services.user_block(blocker=viewer, blocked=blocked_by_viewer)
    services.user_block(blocker=blocker_of_viewer, blocked=viewer)

    html = signed_in(viewer).get(reverse("accounts:search"), {"q": "sam"}).content.decode()

    assert "@sam_friend" in html
    assert "@sam_blocked" not in html
    assert "@sam_blocker" not in html


def test_search_is_paginated_by_twenty():
    for number in range(25):
        make_user(f"pal{number:02d}")
    client = signed_in(make_user("viewer"))

    first = client.get(reverse("accounts:search"), {"q": "pal"}).content.decode()
    second = client.get(reverse("accounts:search"), {"q": "pal", "page": "2"}).content.decode()

    assert first.count('class="user-row"') == 20
    assert "Page 1 of 2" in first
    assert "?q=pal&amp;page=2" in first
    assert second.count('class="user-row"') == 5


# --- Settings --------------------------------------------------------------------------------


def profile_data(user: User, **overrides: object) -> dict[str, object]:
    data: dict[str, object] = {
        "display_name": user.display_name,
        "bio": user.bio,
        "email": user.email,
        "phone_number": "",
    }
    data.update(overrides)
    return data


def test_profile_settings_update_the_profile():
    alice = make_user("alice")
    client = signed_in(alice)

    response = client.post(
        reverse("accounts:settings-profile"),
        profile_data(alice, display_name="Alice B.", bio="Hello", email="new@example.com"),
        follow=True,
    )

    assert "Your profile has been saved." in response.content.decode()
    alice.refresh_from_db()
    assert (alice.display_name, alice.bio, alice.email) == ("Alice B.", "Hello", "new@example.com")


def test_profile_settings_refusals_are_shown_and_nothing_is_saved():
    alice = make_user("alice")
    make_user("bob")

    response = signed_in(alice).post(
        reverse("accounts:settings-profile"),
        profile_data(alice, display_name="Changed", email="bob@example.com"),
    )

    assert response.status_code == 200
    assert "That e-mail address is already in use." in response.content.decode()
    alice.refresh_from_db()
    assert alice.display_name == ""


def test_the_phone_number_appears_in_no_page():
    alice = make_user("alice")
    client = signed_in(alice)
    settings_url = reverse("accounts:settings-profile")
    digits = PHONE.removeprefix("+")

    saved = client.post(settings_url, profile_data(alice, phone_number=PHONE), follow=True)
    alice.refresh_from_db()
    assert alice.phone_number == PHONE

    # A refused form does not echo the number just typed either.
    refused = client.post(settings_url, profile_data(alice, phone_number=PHONE, email="bad"))
    assert refused.status_code == 200

    pages = [
        saved,
        refused,
        client.get(settings_url),
        client.get(reverse("accounts:profile", args=["alice"])),
        signed_in(make_user("bob")).get(reverse("accounts:profile", args=["alice"])),
        client.get(reverse("accounts:search"), {"q": "ali"}),
        client.get(reverse("home")),
    ]
    for page in pages:
        assert page.status_code == 200
        assert digits not in page.content.decode()
    assert "A phone number is set." in client.get(settings_url).content.decode()

    client.post(settings_url, profile_data(alice, remove_phone_number="on"))
    alice.refresh_from_db()
    assert alice.phone_number == ""
    assert "No phone number is set." in client.get(settings_url).content.decode()


def test_an_invalid_phone_number_is_refused():
    alice = make_user("alice")

    response = signed_in(alice).post(
        reverse("accounts:settings-profile"), profile_data(alice, phone_number="12345")
    )

    html = response.content.decode()
    assert "Enter the number in international form" in html
    assert "12345" not in html
    alice.refresh_from_db()
    assert alice.phone_number == ""


def test_a_new_number_and_remove_together_is_refused_next_to_the_number_field():
    alice = make_user("alice")

    response = signed_in(alice).post(
        reverse("accounts:settings-profile"),
        profile_data(alice, phone_number=PHONE, remove_phone_number="on"),
    )

    html = response.content.decode()
    assert "Enter a new number or remove the number, not both." in html
    assert 'id="id_phone_number_error"' in html
    assert PHONE.removeprefix("+") not in html
    alice.refresh_from_db()
    assert alice.phone_number == ""


def _png() -> io.BytesIO:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, format="PNG")
    out.seek(0)
    out.name = "me.png"
    return out


def test_avatar_upload_and_removal(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    alice = make_user("alice")
    client = signed_in(alice)
    settings_url = reverse("accounts:settings-profile")

    client.post(settings_url, profile_data(alice, avatar=_png()))
    alice.refresh_from_db()
    assert alice.avatar
    assert (
        alice.avatar.url in client.get(reverse("accounts:profile", args=["alice"])).content.decode()
    )

    client.post(settings_url, profile_data(alice, remove_avatar="on"))
    alice.refresh_from_db()
    assert not alice.avatar


def test_a_file_that_is_not_an_image_is_refused(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    alice = make_user("alice")
    upload = io.BytesIO(b"not an image")
    upload.name = "me.png"

    response = signed_in(alice).post(
        reverse("accounts:settings-profile"),
        profile_data(alice, display_name="Changed", avatar=upload),
    )

    assert "That file is not an image." in response.content.decode()
    alice.refresh_from_db()
    assert not alice.avatar
    assert alice.display_name == ""


def test_privacy_settings_update_the_user():
    alice = make_user("alice")
    client = signed_in(alice)

    page = client.get(reverse("accounts:settings-privacy")).content.decode()
    assert "Relay calls to hide my IP address" in page

    client.post(
        reverse("accounts:settings-privacy"),
        {"dm_policy": "nobody", "call_policy": "mutual", "relay_calls": "on"},
    )

    alice.refresh_from_db()
    assert alice.dm_policy == DmPolicy.NOBODY
    assert alice.call_policy == CallPolicy.MUTUAL
    assert alice.send_read_receipts is False
    assert alice.relay_calls is True


def test_password_change_keeps_the_session_and_takes_the_new_password(client):
    alice = make_user("alice")
    client.post(reverse("accounts:login"), {"login": "alice", "password": PASSWORD})
    new = "purple monkey dishwasher tonight"

    response = client.post(
        reverse("accounts:settings-password"),
        {"old_password": PASSWORD, "new_password": new, "new_password2": new},
        follow=True,
    )

    assert "Your password has been changed." in response.content.decode()
    assert session_user_id(client) == str(alice.pk)
    alice.refresh_from_db()
    assert alice.check_password(new)


def test_password_change_with_a_wrong_current_password_is_refused():
    alice = make_user("alice")
    new = "purple monkey dishwasher tonight"

    response = signed_in(alice).post(
        reverse("accounts:settings-password"),
        {"old_password": "not my password", "new_password": new, "new_password2": new},
    )

    assert response.status_code == 200
    assert "The current password is wrong." in response.content.decode()
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


# --- Markup ----------------------------------------------------------------------------------


def test_pages_have_no_inline_scripts_or_styles_and_label_every_input(client):
    from messaging.services import conversation_get_or_create_direct

    alice = make_user("alice")
    bob = make_user("bob")
    direct, _ = conversation_get_or_create_direct(user=alice, other=bob)
    anonymous_pages = [
        client.get(reverse("accounts:signup")),
        client.get(reverse("accounts:login")),
    ]
    viewer = signed_in(alice)
    pages = [
        *anonymous_pages,
        viewer.get(reverse("home")),
        viewer.get(reverse("accounts:search"), {"q": "b"}),
        viewer.get(reverse("accounts:profile", args=[bob.handle])),
        viewer.get(reverse("accounts:settings-profile")),
        viewer.get(reverse("accounts:settings-privacy")),
        viewer.get(reverse("accounts:settings-password")),
        viewer.get(reverse("accounts:settings-devices")),
        viewer.get(reverse("accounts:settings-keys")),
        viewer.get(reverse("accounts:settings-safety")),
        viewer.get(reverse("accounts:setup")),
        viewer.get(reverse("messaging:new")),
        viewer.get(reverse("accounts:logout")),
        viewer.get(reverse("messaging:conversation", args=[direct.pk])),
    ]
    for page in pages:
        html = page.content.decode()
        assert page.status_code == 200
        # Scripts are modules from our own static files, never inline code.
        for attributes, body in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S):
            assert 'type="module"' in attributes and 'src="/static/js/' in attributes
            assert not body.strip()
        assert "style=" not in html
        # No inline event handlers either (onclick= and the like): the CSP forbids them.
        assert not re.search(r"\son[a-z]+=", html), re.search(r"\son[a-z]+=", html)
        assert '<main id="main"' in html
        assert 'role="status"' in html
        for input_id in re.findall(r'<(?:input|textarea)[^>]*\bid="([^"]+)"', html):
            assert f'for="{input_id}"' in html, input_id


def test_devices_page_lists_and_removes_devices(client) -> None:
    from accounts.models import Device
    from accounts.tests.factories import give_identity, make_device

    alice = make_user("alice_dev")
    aik = give_identity(alice)
    phone, _ = make_device(alice, aik)
    stranger = make_user("stranger_dev")
    strangers_device, _ = make_device(stranger, give_identity(stranger))
    client.force_login(alice)
    page = client.get("/settings/devices").content.decode()
    assert "Test phone" in page
    assert client.post(f"/settings/devices/{strangers_device.pk}/remove").status_code == 404
    assert Device.objects.get(pk=strangers_device.pk).revoked_at is None
    response = client.post(f"/settings/devices/{phone.pk}/remove", follow=True)
    assert "It is signed out" in response.content.decode()
    assert Device.objects.get(pk=phone.pk).revoked_at is not None
    assert client.get(f"/settings/devices/{phone.pk}/remove").status_code == 405
