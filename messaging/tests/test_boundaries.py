"""Who sees and may do what at the edges: declines, late joiners, leavers, blocks."""

import pytest

from accounts import services as account_services
from accounts.models import Block
from messaging.models import Conversation, Membership, Message
from messaging.tests.support import Person, envelope, person

pytestmark = pytest.mark.django_db


def post_message(sender: Person, conversation_id: str, recipients: list[Person]):
    body, _ = envelope(
        sender=sender.phones[0], conversation_id=conversation_id, recipients=recipients
    )
    return sender.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )


def group(admin: Person, name: str, members: list[Person]) -> str:
    response = admin.phones[0].api.post(
        "/api/v1/conversations",
        {"kind": "group", "name": name, "handles": [m.user.handle for m in members]},
        format="json",
    )
    assert response.status_code == 201, response.content
    conversation_id = response.json()["id"]
    for member in members:
        member.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/accept")
    return conversation_id


def test_a_decline_is_never_shown_to_the_sender() -> None:
    alice, dan = person("alice"), person("dan")
    conversation_id = (
        alice.phones[0]
        .api.post("/api/v1/conversations", {"kind": "direct", "handle": "dan"}, format="json")
        .json()["id"]
    )
    dan.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/decline")
    seen_by_alice = alice.phones[0].api.get(f"/api/v1/conversations/{conversation_id}").json()
    assert all("state" not in member for member in seen_by_alice["members"])
    inbox = alice.phones[0].api.get("/api/v1/conversations").json()["results"]
    assert all("state" not in member for entry in inbox for member in entry["members"])
    assert inbox[0]["my_state"] == "accepted"


def test_late_joiner_sees_nothing_from_before() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    conversation_id = group(alice, "Before", [bob])
    assert post_message(alice, conversation_id, [alice, bob]).status_code == 201
    alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/members", {"handles": ["carol"]}, format="json"
    )
    carol.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/accept")
    (entry,) = carol.phones[0].api.get("/api/v1/conversations").json()["results"]
    assert entry["last_message"] is None
    assert entry["unread_count"] == 0
    assert "last_seq" not in entry
    synced = carol.phones[0].api.post("/api/v1/sync", {}, format="json").json()
    assert synced["messages"] == []


def test_leaving_and_deleting() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = group(alice, "Leavers", [bob])
    sent = post_message(bob, conversation_id, [alice, bob]).json()
    assert (
        bob.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/leave").status_code == 204
    )
    url = f"/api/v1/conversations/{conversation_id}/messages/{sent['id']}"
    assert bob.phones[0].api.delete(url).status_code == 404, "not after leaving"
    assert Message.objects.get().deleted_at is None
    other = group(bob, "Other", [alice])
    wrong = f"/api/v1/conversations/{other}/messages/{sent['id']}"
    assert bob.phones[0].api.delete(wrong).status_code == 404, "the path's conversation counts"


def test_direct_conversations_cannot_be_left() -> None:
    alice = person("alice")
    person("bob")
    conversation_id = (
        alice.phones[0]
        .api.post("/api/v1/conversations", {"kind": "direct", "handle": "bob"}, format="json")
        .json()["id"]
    )
    response = alice.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/leave")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "not_a_group"


def test_blocking_from_a_group_request_blocks_who_added_you() -> None:
    alice, bob, mallory = person("alice"), person("bob"), person("mallory")
    conversation_id = group(alice, "Invite", [mallory])
    refused = mallory.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/members", {"handles": ["bob"]}, format="json"
    )
    assert refused.status_code == 403, "mallory is no admin"
    assert not Membership.objects.filter(conversation_id=conversation_id, user=bob.user).exists()
    Membership.objects.filter(conversation_id=conversation_id, user=mallory.user).update(
        role="admin"
    )
    mallory.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/members", {"handles": ["bob"]}, format="json"
    )
    assert (
        bob.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/block").status_code == 204
    )
    assert Block.objects.filter(blocker=bob.user, blocked=mallory.user).exists()
    assert not Block.objects.filter(blocker=bob.user, blocked=alice.user).exists()


def test_admin_removes_a_member_who_blocked_them() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = group(alice, "Blockers", [bob])
    account_services.user_block(blocker=bob.user, blocked=alice.user)
    response = alice.phones[0].api.delete(f"/api/v1/conversations/{conversation_id}/members/bob")
    assert response.status_code == 204
    assert Membership.objects.get(conversation_id=conversation_id, user=bob.user).left_at


def test_refused_update_changes_nothing() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = group(alice, "Original", [bob])
    response = bob.phones[0].api.patch(
        f"/api/v1/conversations/{conversation_id}",
        {"name": "Renamed", "disappearing_seconds": 30},
        format="json",
    )
    assert response.status_code == 403
    conversation = Conversation.objects.get(pk=conversation_id)
    assert (conversation.name, conversation.disappearing_seconds) == ("Original", None)


def test_blocked_and_pending_members_cannot_type_or_upload() -> None:
    import io

    alice, dan = person("alice"), person("dan")
    conversation_id = (
        alice.phones[0]
        .api.post("/api/v1/conversations", {"kind": "direct", "handle": "dan"}, format="json")
        .json()["id"]
    )
    blob = io.BytesIO(b"x" * 10)
    blob.name = "b"
    pending = dan.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/attachments", {"blob": blob}, format="multipart"
    )
    assert pending.status_code == 403
    account_services.user_block(blocker=dan.user, blocked=alice.user)
    from common.errors import PermissionDenied
    from messaging.services import typing_notify

    with pytest.raises(PermissionDenied):
        typing_notify(user=alice.user, conversation_id=conversation_id)


def test_a_crafted_cursor_is_a_clear_400() -> None:
    from common.encoding import b64u_encode

    alice = person("alice")
    deep = b64u_encode(b"[" * 100_000)
    response = alice.phones[0].api.post("/api/v1/sync", {"cursor": deep}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "cursor"
