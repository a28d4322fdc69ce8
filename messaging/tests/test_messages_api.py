"""Sending, reading and refusing messages over the API (PROTOCOL.md section 3)."""

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts import services as account_services
from accounts.models import User
from messaging.models import Conversation, Membership, Message
from messaging.tests.support import Person, envelope, open_message, person

pytestmark = pytest.mark.django_db


def direct(alice: Person, bob: Person) -> str:
    response = alice.phones[0].api.post(
        "/api/v1/conversations", {"kind": "direct", "handle": bob.user.handle}, format="json"
    )
    assert response.status_code in (200, 201), response.content
    return response.json()["id"]


@pytest.fixture
def pair() -> tuple[Person, Person, str]:
    alice, bob = person("alice", phones=2), person("bob", phones=2)
    account_services.user_follow(follower=bob.user, followee=alice.user)  # no request
    return alice, bob, direct(alice, bob)


def send(sender: Person, conversation_id: str, recipients: list[Person], **kwargs):
    phone = sender.phones[0]
    body, secrets = envelope(
        sender=phone, conversation_id=conversation_id, recipients=recipients, **kwargs
    )
    response = phone.api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    return response, body, secrets


def test_send_and_every_device_reads_only_its_own_wrap(pair) -> None:
    alice, bob, conversation_id = pair
    response, body, _ = send(
        alice, conversation_id, [alice, bob], payload={"type": "text", "body": "hello bob"}
    )
    assert response.status_code == 201, response.content
    sent = response.json()
    assert sent["seq"] == 1
    assert "keys" not in sent
    for phone in bob.phones + alice.phones:
        page = phone.api.get(f"/api/v1/conversations/{conversation_id}/messages").json()["results"]
        assert len(page) == 1
        message = page[0]
        assert message["key"] == body["keys"][str(phone.device.pk)], "its own wrap, no other"
        payload = open_message(
            message, reader=phone, sender_box_public=bytes(alice.phones[0].box.public_key)
        )
        assert payload["body"] == "hello bob"
    row = Message.objects.get()
    assert set(row.keys) == {str(p.device.pk) for p in alice.phones + bob.phones}


def test_repeated_client_id_returns_the_same_message(pair) -> None:
    alice, bob, conversation_id = pair
    client_id = uuid.uuid4()
    first, _, _ = send(alice, conversation_id, [alice, bob], client_id=client_id)
    again, _, _ = send(alice, conversation_id, [alice, bob], client_id=client_id)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert Message.objects.count() == 1


def test_wrong_device_set_is_409_then_success_after_reencrypting(pair) -> None:
    alice, bob, conversation_id = pair
    skipped = bob.phones[1].device.pk
    refused, body, _ = send(alice, conversation_id, [alice, bob], skip_device=skipped)
    assert refused.status_code == 409
    error = refused.json()["error"]
    assert error["code"] == "recipients_changed"
    assert error["missing"] == [str(skipped)] and error["extra"] == []
    assert not Message.objects.exists()
    # A device that is not in the conversation is "extra".
    stranger = person("stranger")
    extra = dict(body["keys"], **{str(skipped): body["keys"][str(alice.phones[0].device.pk)]})
    extra[str(stranger.phones[0].device.pk)] = extra[str(skipped)]
    refused = alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", {**body, "keys": extra}, format="json"
    )
    assert refused.json()["error"]["extra"] == [str(stranger.phones[0].device.pk)]
    ok, _, _ = send(alice, conversation_id, [alice, bob])
    assert ok.status_code == 201


@pytest.mark.parametrize(
    ("field", "value", "error_field"),
    [
        ("nonce", "AAAA", "nonce"),
        ("nonce", "not*base64", "nonce"),
        ("ciphertext", "A" * 88_000, "ciphertext"),  # 66 000 bytes: over 64 KiB
        ("ciphertext", "AAAA", "ciphertext"),  # shorter than FK plus tag
        ("franking_tag", "AAAA", "franking_tag"),
        ("v", 2, "v"),
        ("client_id", "nope", "client_id"),
        ("keys", [], "keys"),
        ("keys", {}, "keys"),
        ("expires_in", -5, "expires_in"),
    ],
)
def test_malformed_envelopes_are_refused_naming_the_field(pair, field, value, error_field) -> None:
    alice, bob, conversation_id = pair
    body, _ = envelope(
        sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
    )
    body[field] = value
    response = alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == error_field
    assert not Message.objects.exists()


def test_bad_wrap_length_names_the_device(pair) -> None:
    alice, bob, conversation_id = pair
    body, _ = envelope(
        sender=alice.phones[0], conversation_id=conversation_id, recipients=[alice, bob]
    )
    device_id = str(bob.phones[0].device.pk)
    body["keys"][device_id] = "AAAA"
    response = alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == f"keys.{device_id}"


def test_outsiders_and_other_peoples_devices_are_refused(pair) -> None:
    alice, bob, conversation_id = pair
    mallory = person("mallory")
    response, _, _ = send(mallory, conversation_id, [alice, bob, mallory])
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"
    # Alice's token is bound to her first phone: it cannot send as her second.
    body, _ = envelope(
        sender=alice.phones[1], conversation_id=conversation_id, recipients=[alice, bob]
    )
    response = alice.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/messages", body, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["field"] == "sender_device"
    assert not Message.objects.exists()


def test_blocked_peer_cannot_send_either_way(pair) -> None:
    alice, bob, conversation_id = pair
    account_services.user_block(blocker=bob.user, blocked=alice.user)
    for sender in (alice, bob):
        response, _, _ = send(sender, conversation_id, [alice, bob])
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "blocked"
    assert not Message.objects.exists()


def test_dm_policy_decides_until_the_request_is_accepted() -> None:
    alice, carol = person("alice"), person("carol")
    account_services.user_update_privacy(user=carol.user, dm_policy="nobody")
    response = alice.phones[0].api.post(
        "/api/v1/conversations", {"kind": "direct", "handle": "carol"}, format="json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "policy_nobody"
    account_services.user_update_privacy(user=carol.user, dm_policy="everyone")
    conversation_id = direct(alice, carol)
    assert Membership.objects.get(user=carol.user).state == "requested"
    assert send(alice, conversation_id, [alice, carol])[0].status_code == 201
    # Carol closes her inbox to strangers: the pending request can take no more.
    account_services.user_update_privacy(user=carol.user, dm_policy="following")
    refused, _, _ = send(alice, conversation_id, [alice, carol])
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "policy_following"
    # Carol may not reply before accepting; once she accepts, the policy no longer applies.
    assert send(carol, conversation_id, [alice, carol])[0].status_code == 403
    assert (
        carol.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/accept").status_code
        == 204
    )
    assert send(alice, conversation_id, [alice, carol])[0].status_code == 201
    assert send(carol, conversation_id, [alice, carol])[0].status_code == 201


def test_requests_inbox_accept_decline_block() -> None:
    alice, dan = person("alice"), person("dan")
    conversation_id = direct(alice, dan)
    send(alice, conversation_id, [alice, dan])
    inbox = dan.phones[0].api.get("/api/v1/conversations").json()["results"]
    requests = dan.phones[0].api.get("/api/v1/conversations", {"requests": "1"}).json()["results"]
    detail = f"/api/v1/conversations/{conversation_id}"
    # Each side sees its own state of the conversation, never the other's.
    assert dan.phones[0].api.get(detail).json()["my_state"] == "requested"
    assert alice.phones[0].api.get(detail).json()["my_state"] == "accepted"
    assert inbox == []
    assert [entry["id"] for entry in requests] == [conversation_id]
    assert (
        dan.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/decline").status_code
        == 204
    )
    assert dan.phones[0].api.get("/api/v1/conversations", {"requests": "1"}).json()["results"] == []
    # The sender is not told: sending still works and looks the same.
    assert send(alice, conversation_id, [alice, dan])[0].status_code == 201
    assert (
        dan.phones[0].api.post(f"/api/v1/conversations/{conversation_id}/block").status_code == 204
    )
    assert send(alice, conversation_id, [alice, dan])[0].json()["error"]["code"] == "blocked"


def test_direct_conversation_is_one_per_pair_and_idempotent(pair) -> None:
    _, bob, conversation_id = pair
    again = bob.phones[0].api.post(
        "/api/v1/conversations", {"kind": "direct", "handle": "ALICE"}, format="json"
    )
    assert again.status_code == 200
    assert again.json()["id"] == conversation_id
    assert Conversation.objects.count() == 1


def test_inbox_has_unread_counts_and_a_fixed_number_of_queries(pair) -> None:
    alice, bob, conversation_id = pair
    for _ in range(3):
        send(alice, conversation_id, [alice, bob])
    inbox = bob.phones[0].api.get("/api/v1/conversations").json()["results"]
    assert inbox[0]["unread_count"] == 3
    assert inbox[0]["last_message"]["seq"] == 3
    assert (
        alice.phones[0].api.get("/api/v1/conversations").json()["results"][0]["unread_count"] == 0
    )
    bob.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/read", {"seq": 2}, format="json"
    )
    assert bob.phones[0].api.get("/api/v1/conversations").json()["results"][0]["unread_count"] == 1

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert bob.phones[0].api.get("/api/v1/conversations").status_code == 200
        return len(queries)

    few = count_queries()
    for index in range(8):
        other = person(f"friend{index}")
        account_services.user_follow(follower=bob.user, followee=other.user)
        conversation = direct(other, bob)
        send(other, conversation, [other, bob])
    assert len(bob.phones[0].api.get("/api/v1/conversations").json()["results"]) == 9
    assert count_queries() == few, "no N+1: the same queries for 1 or 9 conversations"


def test_history_pages_scroll_back(pair) -> None:
    alice, bob, conversation_id = pair
    for _ in range(5):
        send(alice, conversation_id, [alice, bob])
    api = bob.phones[0].api
    first = api.get(f"/api/v1/conversations/{conversation_id}/messages", {"limit": 2}).json()[
        "results"
    ]
    assert [m["seq"] for m in first] == [5, 4]
    older = api.get(
        f"/api/v1/conversations/{conversation_id}/messages", {"limit": 2, "before": 4}
    ).json()["results"]
    assert [m["seq"] for m in older] == [3, 2]


def test_sync_returns_everything_after_the_cursor_across_conversations(pair) -> None:
    alice, bob, conversation_id = pair
    carol = person("carol")
    account_services.user_follow(follower=bob.user, followee=carol.user)
    other_conversation = direct(carol, bob)
    send(alice, conversation_id, [alice, bob])
    send(carol, other_conversation, [carol, bob])
    api = bob.phones[1].api
    page = api.post("/api/v1/sync", {"limit": 500}, format="json").json()
    assert len(page["messages"]) == 2 and page["has_more"] is False
    assert all(m["key"] for m in page["messages"])
    cursor = page["cursor"]
    assert api.post("/api/v1/sync", {"cursor": cursor}, format="json").json()["messages"] == []
    for _ in range(3):
        send(alice, conversation_id, [alice, bob])
    small = api.post("/api/v1/sync", {"cursor": cursor, "limit": 2}, format="json").json()
    assert [m["seq"] for m in small["messages"]] == [2, 3] and small["has_more"] is True
    rest = api.post("/api/v1/sync", {"cursor": small["cursor"], "limit": 2}, format="json").json()
    assert [m["seq"] for m in rest["messages"]] == [4] and rest["has_more"] is False
    bad = api.post("/api/v1/sync", {"cursor": "garbage!"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "cursor"


def test_delete_for_everyone_erases_ciphertext_and_keys(pair) -> None:
    alice, bob, conversation_id = pair
    sent, _, _ = send(alice, conversation_id, [alice, bob])
    message_id = sent.json()["id"]
    url = f"/api/v1/conversations/{conversation_id}/messages/{message_id}"
    assert bob.phones[0].api.delete(url).status_code == 403, "only the sender"
    assert alice.phones[0].api.delete(url).status_code == 204
    row = Message.objects.get()
    assert bytes(row.ciphertext) == b"" and row.keys == {} and row.history_keys == {}
    page = bob.phones[0].api.get(f"/api/v1/conversations/{conversation_id}/messages").json()
    assert page["results"][0]["deleted"] is True
    assert page["results"][0]["ciphertext"] is None and page["results"][0]["key"] is None


def test_group_lifecycle_and_admin_rights() -> None:
    alice, bob, carol, dave = (person(name) for name in ("alice", "bob", "carol", "dave"))
    response = alice.phones[0].api.post(
        "/api/v1/conversations",
        {"kind": "group", "name": "Trip", "handles": ["bob", "carol"]},
        format="json",
    )
    assert response.status_code == 201
    group = response.json()
    assert {m["user"]["handle"] for m in group["members"]} == {"alice", "bob", "carol"}
    group_id = group["id"]
    assert send(alice, group_id, [alice, bob, carol])[0].status_code == 201
    members_url = f"/api/v1/conversations/{group_id}/members"
    assert (
        bob.phones[0].api.post(members_url, {"handles": ["dave"]}, format="json").status_code == 403
    )
    assert (
        alice.phones[0].api.post(members_url, {"handles": ["dave"]}, format="json").status_code
        == 200
    )
    # Dave joined after the first message: he does not see it, not even its metadata.
    dave_history = dave.phones[0].api.get(f"/api/v1/conversations/{group_id}/messages").json()
    assert dave_history["results"] == []
    refused, _, _ = send(alice, group_id, [alice, bob, carol])
    assert refused.status_code == 409 and refused.json()["error"]["missing"]
    assert alice.phones[0].api.delete(f"{members_url}/carol").status_code == 204
    assert send(alice, group_id, [alice, bob, dave])[0].status_code == 201
    assert alice.phones[0].api.post(f"/api/v1/conversations/{group_id}/leave").status_code == 204
    assert Membership.objects.get(conversation_id=group_id, user=bob.user).role == "admin"
    renamed = bob.phones[0].api.patch(
        f"/api/v1/conversations/{group_id}", {"name": "Trip 2"}, format="json"
    )
    assert renamed.json()["name"] == "Trip 2"


def test_group_size_is_limited() -> None:
    alice = person("alice")
    response = alice.phones[0].api.post(
        "/api/v1/conversations",
        {"kind": "group", "name": "Solo", "handles": ["alice"]},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_size"


def test_reading_with_receipts_off_still_moves_the_read_marker(pair) -> None:
    alice, bob, conversation_id = pair
    send(alice, conversation_id, [alice, bob])
    User.objects.filter(pk=bob.user.pk).update(send_read_receipts=False)
    response = bob.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/read", {"seq": 1}, format="json"
    )
    assert response.json() == {"seq": 1}
    assert Membership.objects.get(conversation_id=conversation_id, user=bob.user).last_read_seq == 1


def test_disappearing_timer_sets_expiry_and_the_sweep_erases(pair) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from messaging.services import messages_erase_expired

    alice, bob, conversation_id = pair
    bad = alice.phones[0].api.patch(
        f"/api/v1/conversations/{conversation_id}", {"disappearing_seconds": 7}, format="json"
    )
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "disappearing_seconds"
    alice.phones[0].api.patch(
        f"/api/v1/conversations/{conversation_id}", {"disappearing_seconds": 30}, format="json"
    )
    send(alice, conversation_id, [alice, bob])
    message = Message.objects.get()
    assert message.expires_at is not None
    assert messages_erase_expired() == 0, "not due yet"
    Message.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    # Due but not yet swept: it is already served as erased.
    page = bob.phones[0].api.get(f"/api/v1/conversations/{conversation_id}/messages").json()
    assert page["results"][0]["deleted"] is True
    assert page["results"][0]["ciphertext"] is None and page["results"][0]["key"] is None
    assert messages_erase_expired() == 1
    message.refresh_from_db()
    assert bytes(message.ciphertext) == b"" and message.keys == {}


def test_attachment_limits_and_membership(pair, settings, tmp_path) -> None:
    import io

    from messaging.models import Attachment

    settings.MEDIA_ROOT = tmp_path
    settings.ATTACHMENT_MAX_BYTES = 1000
    alice, bob, conversation_id = pair
    url = f"/api/v1/conversations/{conversation_id}/attachments"

    def upload(phone, data: bytes):
        blob = io.BytesIO(data)
        blob.name = "secret-name.jpg"
        return phone.api.post(url, {"blob": blob}, format="multipart")

    too_big = upload(alice.phones[0], b"x" * 1001)
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "file_too_large"
    assert upload(alice.phones[0], b"").status_code == 400
    outsider = person("outsider")
    assert upload(outsider.phones[0], b"x" * 10).status_code == 404
    assert not Attachment.objects.exists()
    ok = upload(alice.phones[0], b"\x01" * 1000)
    assert ok.status_code == 201
    stored = Attachment.objects.get()
    assert "secret-name" not in str(stored.blob.name), "the client file name never reaches disk"
    download = bob.phones[0].api.get(f"/api/v1/attachments/{ok.json()['blob_id']}")
    assert download.status_code == 200
    assert download["Content-Type"] == "application/octet-stream"
    assert b"".join(download.streaming_content) == b"\x01" * 1000
    assert (
        outsider.phones[0].api.get(f"/api/v1/attachments/{ok.json()['blob_id']}").status_code == 404
    )


def test_creating_a_group_costs_the_same_queries_for_any_size() -> None:
    alice = person("alice")
    others = [person(f"member{index}", phones=0, history_key=False) for index in range(8)]

    def create(handles: list[str]) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = alice.phones[0].api.post(
                "/api/v1/conversations",
                {"kind": "group", "name": "Count", "handles": handles},
                format="json",
            )
        assert response.status_code == 201, response.content
        return len(queries)

    create([p.user.handle for p in others[:2]])  # warms up what is fetched once per process
    small = create([p.user.handle for p in others[:2]])
    large = create([p.user.handle for p in others])
    assert large == small, "no query per member"


def test_receipts_show_delivered_and_read_marks_only_as_members_allow(pair) -> None:
    alice, bob, conversation_id = pair
    second_phone = bob.add_phone()
    for _ in range(3):
        send(alice, conversation_id, [alice, bob])
    url = f"/api/v1/conversations/{conversation_id}/receipts"
    assert alice.phones[0].api.get(url).json()["results"] == [
        {"user_id": str(bob.user.pk), "delivered_seq": 0, "read_seq": 0}
    ]
    second_phone.api.post(
        f"/api/v1/conversations/{conversation_id}/delivered", {"seq": 3}, format="json"
    )
    bob.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/delivered", {"seq": 1}, format="json"
    )
    bob.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/read", {"seq": 2}, format="json"
    )
    # Delivered is the furthest device; read is the user's.
    assert alice.phones[0].api.get(url).json()["results"] == [
        {"user_id": str(bob.user.pk), "delivered_seq": 3, "read_seq": 2}
    ]
    with CaptureQueriesContext(connection) as queries:
        alice.phones[0].api.get(url)
    receipt_queries = [q for q in queries.captured_queries if "messaging_" in q["sql"]]
    assert len(receipt_queries) == 2, "memberships, then the delivered marks"
    # Bob turns read receipts off: his read mark is no longer shown.
    User.objects.filter(pk=bob.user.pk).update(send_read_receipts=False)
    assert alice.phones[0].api.get(url).json()["results"][0]["read_seq"] is None
    # Outsiders learn nothing, not even that the conversation exists.
    outsider = person("outsider")
    response = outsider.phones[0].api.get(url)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "conversation_not_found"


@pytest.mark.parametrize(
    ("query", "field"),
    [({"before": "x"}, "before"), ({"limit": "many"}, "limit"), ({"limit": 500}, "limit")],
)
def test_history_refuses_bad_paging_naming_the_field(pair, query, field) -> None:
    _, bob, conversation_id = pair
    response = bob.phones[0].api.get(f"/api/v1/conversations/{conversation_id}/messages", query)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field
