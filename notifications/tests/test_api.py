"""The notifications API: the centre, the badge count, preferences, push subscriptions,
and muting a conversation (docs/api.md)."""

import pytest
from rest_framework.test import APIClient

from messaging.models import Membership
from notifications.models import Notification, PushSubscription
from notifications.tests.support import direct, person, send
from notifications.tests.test_services import AUTH, P256DH

pytestmark = pytest.mark.django_db


def test_the_list_shows_who_did_what_and_marks_read() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    send(alice, conversation_id, [bob])
    send(alice, conversation_id, [bob])
    api = bob.phones[0].api
    page = api.get("/api/v1/notifications").json()
    (item,) = page["results"]
    assert item["kind"] == "message"
    assert item["title"] == "New messages from @alice"
    assert item["url"] == f"/c/{conversation_id}"
    assert item["count"] == 2 and item["read"] is False
    assert item["actor"]["handle"] == "alice"
    assert api.get("/api/v1/notifications/unread-count").json() == {"unread": 1}
    response = api.post("/api/v1/notifications/read", {"ids": [item["id"]]}, format="json")
    assert response.status_code == 200 and response.json() == {"unread": 0}
    assert api.get("/api/v1/notifications?unread=1").json()["results"] == []
    assert api.get("/api/v1/notifications").json()["results"][0]["read"] is True


def test_others_cannot_see_or_read_ones_notifications() -> None:
    alice, bob, eve = person("alice"), person("bob"), person("eve")
    send(alice, direct(alice, bob), [bob])
    notification = Notification.objects.get(user=bob.user)
    eve_api = eve.phones[0].api
    assert eve_api.get("/api/v1/notifications").json()["results"] == []
    response = eve_api.post("/api/v1/notifications/read", {"ids": [str(notification.pk)]},
                            format="json")  # fmt: skip
    assert response.status_code == 200
    notification.refresh_from_db()
    assert notification.read_at is None
    assert APIClient().get("/api/v1/notifications").status_code in (401, 403)


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "ids"), ({"ids": ["nope"]}, "ids.0"), ({"ids": [], "all": False}, "ids")],
)
def test_mark_read_refuses_a_bad_body(body: dict[str, object], field: str) -> None:
    bob = person("bob")
    response = bob.phones[0].api.post("/api/v1/notifications/read", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_preferences_read_and_write_with_clear_errors() -> None:
    bob = person("bob")
    api = bob.phones[0].api
    assert api.get("/api/v1/notifications/preferences").json()["preferences"]["digest"] == {
        "email": True
    }
    response = api.put(
        "/api/v1/notifications/preferences",
        {"preferences": {"message": {"email": False}, "gossip": {"email": True}}},
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "preferences.gossip"
    assert api.get("/api/v1/notifications/preferences").json()["preferences"]["message"] == {
        "email": True, "push": True
    }, "nothing half-written"  # fmt: skip
    response = api.put(
        "/api/v1/notifications/preferences",
        {"preferences": {"message": {"email": False}}},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["preferences"]["message"] == {"email": False, "push": True}


def test_push_subscriptions_over_the_api() -> None:
    bob = person("bob")
    api = bob.phones[0].api
    key = api.get("/api/v1/notifications/push-subscriptions").json()["vapid_public_key"]
    assert len(key) == 87  # 65 bytes, base64url
    endpoint = "https://fcm.googleapis.com/fcm/send/abc"
    body = {"endpoint": endpoint, "keys": {"p256dh": P256DH, "auth": AUTH},
            "device_id": str(bob.phones[0].device.pk)}  # fmt: skip
    response = api.post("/api/v1/notifications/push-subscriptions", body, format="json")
    assert response.status_code == 201, response.content
    bad = {**body, "endpoint": "https://10.0.0.1/push"}
    response = api.post("/api/v1/notifications/push-subscriptions", bad, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "endpoint_not_allowed", "field": "endpoint",
        "message": "That is not the address of a known push service.",
    }  # fmt: skip
    missing = {"endpoint": endpoint, "keys": {"p256dh": P256DH}}
    response = api.post("/api/v1/notifications/push-subscriptions", missing, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "keys.auth"
    assert PushSubscription.objects.count() == 1
    response = api.delete(
        "/api/v1/notifications/push-subscriptions", {"endpoint": endpoint}, format="json"
    )
    assert response.status_code == 204
    assert not PushSubscription.objects.exists()


def test_muting_a_conversation_over_the_api() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    api = bob.phones[0].api
    response = api.post(f"/api/v1/conversations/{conversation_id}/mute", {"seconds": 60},
                        format="json")  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["field"] == "seconds"
    response = api.post(f"/api/v1/conversations/{conversation_id}/mute", {"seconds": None},
                        format="json")  # fmt: skip
    assert response.status_code == 200
    assert response.json()["muted_until"].startswith("9999-12-31")
    detail = api.get(f"/api/v1/conversations/{conversation_id}").json()
    assert detail["muted_until"].startswith("9999-12-31")
    inbox = api.get("/api/v1/conversations").json()["results"]
    assert inbox[0]["muted_until"].startswith("9999-12-31")
    send(alice, conversation_id, [bob])
    assert not Notification.objects.filter(user=bob.user).exists()
    response = api.delete(f"/api/v1/conversations/{conversation_id}/mute")
    assert response.status_code == 200 and response.json() == {"muted_until": None}
    assert Membership.objects.get(user=bob.user).muted_until is None
    # Not a member: no such conversation.
    eve = person("eve")
    response = eve.phones[0].api.post(
        f"/api/v1/conversations/{conversation_id}/mute", {"seconds": 3600}, format="json"
    )
    assert response.status_code == 404
