"""Privacy and blocking rules, as tables: who may message, call, follow and find whom."""

import pytest

from accounts import selectors, services
from accounts.models import Follow, User
from accounts.tests.factories import api_client_for, make_user

pytestmark = pytest.mark.django_db


def _pair(
    *, alice_follows_bob: bool, bob_follows_alice: bool, block: str | None
) -> tuple[User, User]:
    alice, bob = make_user(), make_user()
    if alice_follows_bob:
        Follow.objects.create(follower=alice, followee=bob)
    if bob_follows_alice:
        Follow.objects.create(follower=bob, followee=alice)
    if block == "bob_blocks_alice":
        services.user_block(blocker=bob, blocked=alice)
    elif block == "alice_blocks_bob":
        services.user_block(blocker=alice, blocked=bob)
    return alice, bob


# Alice writes to Bob. Columns: Bob's dm_policy, Bob follows Alice, Alice follows Bob, block.
MESSAGE_RULES = [
    ("everyone", False, False, None, True, "ok"),
    ("everyone", False, True, None, True, "ok"),
    ("everyone", True, False, "bob_blocks_alice", False, "blocked"),
    ("everyone", True, True, "alice_blocks_bob", False, "blocked"),
    ("following", False, False, None, False, "policy_following"),
    ("following", False, True, None, False, "policy_following"),
    ("following", True, False, None, True, "ok"),
    ("following", True, True, "bob_blocks_alice", False, "blocked"),
    ("nobody", True, True, None, False, "policy_nobody"),
    ("nobody", False, False, None, False, "policy_nobody"),
]


@pytest.mark.parametrize(
    ("dm_policy", "bob_follows", "alice_follows", "block", "allowed", "reason"), MESSAGE_RULES
)
def test_who_may_message(dm_policy, bob_follows, alice_follows, block, allowed, reason) -> None:
    alice, bob = _pair(alice_follows_bob=alice_follows, bob_follows_alice=bob_follows, block=block)
    services.user_update_privacy(user=bob, dm_policy=dm_policy)
    decision = selectors.message_permission(sender=alice, recipient=bob)
    assert (decision.allowed, decision.reason) == (allowed, reason)


# Alice calls Bob. Columns: Bob's call_policy, Bob follows Alice, Alice follows Bob, block.
CALL_RULES = [
    ("everyone", False, False, None, True, "ok"),
    ("everyone", True, True, "bob_blocks_alice", False, "blocked"),
    ("everyone", True, True, "alice_blocks_bob", False, "blocked"),
    ("following", False, True, None, False, "policy_following"),
    ("following", True, False, None, True, "ok"),
    ("mutual", True, False, None, False, "policy_mutual"),
    ("mutual", False, True, None, False, "policy_mutual"),
    ("mutual", True, True, None, True, "ok"),
    ("mutual", True, True, "bob_blocks_alice", False, "blocked"),
    ("nobody", True, True, None, False, "policy_nobody"),
]


@pytest.mark.parametrize(
    ("call_policy", "bob_follows", "alice_follows", "block", "allowed", "reason"), CALL_RULES
)
def test_who_may_call(call_policy, bob_follows, alice_follows, block, allowed, reason) -> None:
    alice, bob = _pair(alice_follows_bob=alice_follows, bob_follows_alice=bob_follows, block=block)
    services.user_update_privacy(user=bob, call_policy=call_policy)
    decision = selectors.call_permission(caller=alice, callee=bob)
    assert (decision.allowed, decision.reason) == (allowed, reason)


# What a block does, seen from each side. Columns: block direction, viewer, what is checked,
# expected.
BLOCK_EFFECTS = [
    ("alice_blocks_bob", "alice", "search_finds_other", False),
    ("alice_blocks_bob", "bob", "search_finds_other", False),
    ("alice_blocks_bob", "alice", "profile_status", 200),  # the blocker can unblock
    ("alice_blocks_bob", "bob", "profile_status", 404),
    ("alice_blocks_bob", "alice", "follow_status", 403),
    ("alice_blocks_bob", "bob", "follow_status", 404),
    ("alice_blocks_bob", "bob", "keys_status", 404),
    (None, "bob", "search_finds_other", True),
    (None, "bob", "profile_status", 200),
    (None, "bob", "follow_status", 204),
    (None, "bob", "keys_status", 200),
]


@pytest.mark.parametrize(("block", "viewer", "check", "expected"), BLOCK_EFFECTS)
def test_block_effects(block, viewer, check, expected) -> None:
    alice = make_user("alice_b", display_name="Alice")
    bob = make_user("bob_b", display_name="Bob")
    if block:
        services.user_block(blocker=alice, blocked=bob)
    me, other = (alice, bob) if viewer == "alice" else (bob, alice)
    client, _ = api_client_for(me)
    if check == "search_finds_other":
        results = client.get("/api/v1/users", {"q": other.handle[:3]}).json()["results"]
        assert (other.handle in {user["handle"] for user in results}) is expected
    elif check == "profile_status":
        assert client.get(f"/api/v1/users/{other.handle}").status_code == expected
    elif check == "follow_status":
        assert client.post(f"/api/v1/users/{other.handle}/follow").status_code == expected
    elif check == "keys_status":
        assert client.get(f"/api/v1/users/{other.handle}/keys").status_code == expected


def test_block_removes_follows_both_ways_and_unblock_restores_nothing() -> None:
    alice, bob = _pair(alice_follows_bob=True, bob_follows_alice=True, block=None)
    services.user_block(blocker=alice, blocked=bob)
    assert not Follow.objects.exists()
    services.user_unblock(blocker=alice, blocked=bob)
    assert not Follow.objects.exists()
    assert selectors.message_permission(sender=bob, recipient=alice).allowed


def test_profile_api_reports_permissions_and_relationship() -> None:
    alice, bob = make_user("alice_p"), make_user("bob_p")
    services.user_update_privacy(user=bob, dm_policy="following", call_policy="mutual")
    client, _ = api_client_for(alice)
    profile = client.get("/api/v1/users/BOB_P").json()
    assert profile["can_message"] is False and profile["can_call"] is False
    services.user_follow(follower=bob, followee=alice)
    services.user_follow(follower=alice, followee=bob)
    profile = client.get("/api/v1/users/bob_p").json()
    assert profile["relationship"] == {
        "following": True, "followed_by": True, "blocking": False, "muting": False,
    }  # fmt: skip
    assert profile["can_message"] is True and profile["can_call"] is True
    assert profile["followers_count"] == 1 and profile["following_count"] == 1
    assert "email" not in profile and "phone_number" not in profile


def test_follow_unfollow_mute_are_idempotent() -> None:
    alice, bob = make_user(), make_user()
    client, _ = api_client_for(alice)
    for _ in range(2):
        assert client.post(f"/api/v1/users/{bob.handle}/follow").status_code == 204
        assert client.post(f"/api/v1/users/{bob.handle}/mute").status_code == 204
    assert Follow.objects.filter(follower=alice, followee=bob).count() == 1
    followers = client.get(f"/api/v1/users/{bob.handle}/followers").json()["results"]
    assert [user["handle"] for user in followers] == [alice.handle]
    assert client.get(f"/api/v1/users/{bob.handle}").json()["relationship"]["muting"] is True
    for _ in range(2):
        assert client.delete(f"/api/v1/users/{bob.handle}/follow").status_code == 204
    assert not Follow.objects.exists()
    assert (
        client.post(f"/api/v1/users/{alice.handle}/follow").json()["error"]["code"] == "self_target"
    )


def test_privacy_settings_via_api_reject_unknown_values() -> None:
    alice = make_user()
    client, _ = api_client_for(alice)
    response = client.patch("/api/v1/me", {"dm_policy": "friends", "bio": "changed"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "dm_policy"
    alice.refresh_from_db()
    assert alice.bio == "", "a refused request changes nothing"
    ok = client.patch(
        "/api/v1/me",
        {
            "dm_policy": "nobody",
            "call_policy": "mutual",
            "send_read_receipts": False,
            "relay_calls": True,
        },
        format="json",
    )
    assert ok.status_code == 200
    expected = {
        "dm_policy": "nobody", "call_policy": "mutual",
        "send_read_receipts": False, "relay_calls": True,
    }  # fmt: skip
    assert {key: ok.json()[key] for key in expected} == expected
