"""Notifications end to end, on a live Daphne server: messages sent over its HTTP API
tell an away user once by email (to the session's mail server on loopback) and once
by Web Push (to a push endpoint on loopback that checks VAPID and decrypts the body
as a browser would). On `make test` the server process runs the tasks itself; on
`make test-services` the session's Celery worker does, and one test kills it in the
middle of sending."""

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.urls import reverse
from websockets.sync.client import ClientConnection, connect

from accounts import services as account_services
from common.testing import (
    DELIVERY_LEASE_SECONDS,
    NOTIFY_EMAIL_DELAY_SECONDS,
    SERVICES_MODE,
    WORKER_VISIBILITY_TIMEOUT_SECONDS,
    CeleryWorker,
    LiveServer,
    Mail,
    SmtpServer,
    database_dump,
    wait_until,
)
from messaging.tests.support import Person, Phone, envelope, person
from notifications.models import Delivery, Notification, PushSubscription
from tests.push_endpoint import PushEndpoint

pytestmark = pytest.mark.django_db(transaction=True)

# Generous: the worker or the server may be busy with what earlier tests left.
WAIT = 60


@pytest.fixture(scope="module")
def server(start_daphne: Any) -> LiveServer:
    return start_daphne()


@pytest.fixture(scope="module")
def push_endpoint() -> Iterator[PushEndpoint]:
    with PushEndpoint(settings.VAPID_PUBLIC_KEY) as endpoint:
        yield endpoint


@dataclass
class Talk:
    """Alice writes to Bob, who follows her (so it is a conversation, not a request)."""

    server: LiveServer
    alice: Person
    bob: Person
    conversation_id: str

    @property
    def conversation_url(self) -> str:
        return reverse("messaging:conversation", args=[self.conversation_id])


def api(server: LiveServer, phone: Phone) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.url}/api/v1",
        headers={"Authorization": f"Bearer {phone.key}"},
        timeout=30,
    )


def talk(server: LiveServer) -> Talk:
    """Fresh people each time: nothing an earlier test left can be counted here."""
    tag = uuid.uuid4().hex[:8]
    alice, bob = person(f"alice_{tag}"), person(f"bob_{tag}")
    account_services.user_follow(follower=bob.user, followee=alice.user)
    with api(server, alice.phones[0]) as client:
        response = client.post("/conversations", json={"kind": "direct", "handle": bob.user.handle})
    assert response.status_code in (200, 201), response.text
    return Talk(server, alice, bob, response.json()["id"])


def send(talk: Talk, text: str) -> None:
    body, _ = envelope(
        sender=talk.alice.phones[0], conversation_id=talk.conversation_id,
        recipients=[talk.alice, talk.bob],
        payload={"type": "text", "body": text, "sent_at": int(time.time()), "reply_to": None,
                 "attachments": []},
    )  # fmt: skip
    with api(talk.server, talk.alice.phones[0]) as client:
        response = client.post(f"/conversations/{talk.conversation_id}/messages", json=body)
    assert response.status_code == 201, response.text


def subscribe(
    server: LiveServer, phone: Phone, endpoint: PushEndpoint, status: int = 201
) -> tuple[str, str]:
    """Subscribe this phone's browser, as the site's script does. Returns the endpoint
    URL and the subscription's id."""
    subscription = endpoint.subscription_json(status)
    with api(server, phone) as client:
        response = client.post(
            "/notifications/push-subscriptions",
            json={**subscription, "device_id": str(phone.device.pk)},
        )
    assert response.status_code == 201, response.text
    return subscription["endpoint"], response.json()["id"]


def deliveries(someone: Person) -> list[tuple[str, str, str, int]]:
    """(channel, state, detail, attempts) of each of their delivery rows, email first."""
    return sorted(
        Delivery.objects.filter(user=someone.user).values_list(
            "channel", "state", "detail", "attempts"
        )
    )


def telling(mail: Mail) -> bool:
    """A notification email, not one of the security emails a new device also brings:
    its Message-ID is the delivery's."""
    return str(mail.message["Message-ID"]).endswith("@parley>")


def emails(smtp: SmtpServer, someone: Person) -> list[Mail]:
    return [mail for mail in smtp.mails(someone.user.email) if telling(mail)]


def mail_text(mail: Mail) -> str:
    message = mail.message
    headers = "".join(f"{name}: {value}\n" for name, value in message.items())
    body = message.get_body(preferencelist=("plain",))
    assert body is not None
    return headers + str(body.get_content())


def open_socket(server: LiveServer, phone: Phone) -> ClientConnection:
    return connect(
        f"{server.ws_url}/ws/?device={phone.device.pk}",
        additional_headers={"Authorization": f"Bearer {phone.key}"},
        open_timeout=10,
    )


def frames_of(socket: ClientConnection, kinds: set[str], within: float = 30) -> dict[str, Any]:
    """The first frame of each of ``kinds``, in whatever order they come."""
    found: dict[str, Any] = {}
    deadline = time.monotonic() + within
    while set(found) != kinds:
        frame: dict[str, Any] = json.loads(socket.recv(timeout=deadline - time.monotonic()))
        if frame["type"] in kinds:
            found.setdefault(frame["type"], frame)
    return found


def test_an_away_user_is_told_once_by_email_and_push_for_a_run_of_messages(
    server: LiveServer,
    push_endpoint: PushEndpoint,
    smtp_server: SmtpServer,
    celery_worker_process: CeleryWorker | None,
) -> None:
    marker = f"MARKER-{uuid.uuid4().hex}"
    chat = talk(server)
    bob_email, alice_handle = chat.bob.user.email, f"@{chat.alice.user.handle}"
    endpoint, _ = subscribe(server, chat.bob.phones[0], push_endpoint)

    send(chat, f"first {marker}")
    wait_until(
        lambda: emails(smtp_server, chat.bob) and push_endpoint.pushes(endpoint),
        timeout=WAIT, message="an email and a push to the away user",
    )  # fmt: skip
    notification = Notification.objects.get(user=chat.bob.user)
    email_delivery = Delivery.objects.get(user=chat.bob.user, channel="email")

    (mail,) = emails(smtp_server, chat.bob)
    message = mail.message
    assert message["To"] == bob_email
    assert message["Subject"] == f"New message from {alice_handle} on Parley"
    # The delivery's own Message-ID, so a resend of it can be told apart.
    assert message["Message-ID"] == f"<{email_delivery.pk}@parley>"
    text = mail_text(mail)
    assert f"A new message from {alice_handle}." in text
    assert settings.SITE_URL + chat.conversation_url in text

    (push,) = push_endpoint.pushes(endpoint)
    assert (push.problems, push.status) == ([], 201)
    assert push.headers["topic"] == notification.pk.hex
    payload = push.payload()
    assert payload["title"] == f"New message from {alice_handle}"
    assert alice_handle in payload["body"]
    assert (payload["url"], payload["count"], payload["kind"]) == (
        chat.conversation_url, 1, "message",
    )  # fmt: skip

    # Nine more while Bob stays away are counted into the same notification: no second
    # email or push, even once the email window has passed again.
    for number in range(9):
        send(chat, f"more {number} {marker}")
    wait_until(
        lambda: Notification.objects.filter(user=chat.bob.user, count=10).exists(),
        timeout=WAIT, message="all ten messages counted",
    )  # fmt: skip
    time.sleep(NOTIFY_EMAIL_DELAY_SECONDS + 2)
    assert len(emails(smtp_server, chat.bob)) == 1
    assert len(push_endpoint.pushes(endpoint)) == 1
    assert Notification.objects.filter(user=chat.bob.user).count() == 1
    assert deliveries(chat.bob) == [("email", "sent", "", 1), ("push", "sent", "", 1)]
    with api(server, chat.bob.phones[0]) as client:
        (listed,) = client.get("/notifications").json()["results"]
        unread = client.get("/notifications/unread-count").json()["unread"]
    assert (listed["id"], listed["count"], listed["read"], unread) == (
        str(notification.pk), 10, False, 1,
    )  # fmt: skip
    assert listed["title"] == f"New messages from {alice_handle}"

    # What was said is nowhere: not in the email, the push, the database or the logs.
    assert marker.encode() not in mail.raw
    assert marker not in text
    assert marker.encode() not in push.body
    assert marker.encode() not in (push.plaintext or b"")
    assert not any(marker.encode() in value for value in database_dump())
    assert marker not in server.log()
    if celery_worker_process is not None:
        assert marker not in celery_worker_process.log()


def test_an_online_user_gets_the_live_events_but_no_email_or_push(
    server: LiveServer,
    push_endpoint: PushEndpoint,
    smtp_server: SmtpServer,
    celery_worker_process: CeleryWorker | None,
) -> None:
    chat = talk(server)
    endpoint, subscription_id = subscribe(server, chat.bob.phones[0], push_endpoint)
    # Someone away, written to just after Bob: once they have their email and push,
    # Bob's deliveries (queued and timed before theirs) have run.
    later = talk(server)
    later_endpoint, _ = subscribe(server, later.bob.phones[0], push_endpoint)
    with open_socket(server, chat.bob.phones[0]) as socket:
        assert frames_of(socket, {"hello"})
        send(chat, "hello bob")
        frames = frames_of(socket, {"notification", "notifications.unread"})
        shown = frames["notification"]["notification"]
        assert (shown["kind"], shown["count"], shown["conversation_id"]) == (
            "message", 1, chat.conversation_id,
        )  # fmt: skip
        assert shown["actor"]["handle"] == chat.alice.user.handle
        assert frames["notifications.unread"]["count"] == 1
        send(later, "hello")
        wait_until(
            lambda: emails(smtp_server, later.bob) and push_endpoint.pushes(later_endpoint),
            timeout=WAIT, message="the email and push of the one away",
        )  # fmt: skip
    assert emails(smtp_server, chat.bob) == []
    assert push_endpoint.pushes(endpoint) == []
    # "online" is not final, so it is not recorded: a later message of the window (or
    # the digest) can still tell Bob once he is away.
    assert deliveries(chat.bob) == []
    if celery_worker_process is not None:
        assert f"{{'{subscription_id}': 'online'}}" in celery_worker_process.log()


def test_a_subscription_the_push_service_calls_gone_is_deleted_and_not_retried(
    server: LiveServer,
    push_endpoint: PushEndpoint,
    smtp_server: SmtpServer,
    celery_worker_process: CeleryWorker | None,
) -> None:
    chat = talk(server)
    endpoint, subscription_id = subscribe(server, chat.bob.phones[0], push_endpoint, status=410)
    send(chat, "hello bob")
    wait_until(
        lambda: not PushSubscription.objects.filter(pk=subscription_id).exists(),
        timeout=WAIT, message="the gone subscription is deleted",
    )  # fmt: skip
    # The email goes out after its window: by then the push task has long finished.
    wait_until(lambda: emails(smtp_server, chat.bob), timeout=WAIT, message="the email")
    (push,) = push_endpoint.pushes(endpoint)
    assert (push.problems, push.status) == ([], 410)
    # The mail server has the email a moment before its sender marks the delivery sent.
    wait_until(
        lambda: deliveries(chat.bob) == [("email", "sent", "", 1), ("push", "gone", "gone", 1)],
        timeout=WAIT, message="the email marked sent and the push gone",
    )  # fmt: skip
    notification = Notification.objects.get(user=chat.bob.user)
    if celery_worker_process is not None:
        from config.celery import app

        inspect = app.control.inspect(destination=[celery_worker_process.name], timeout=2)
        waiting = json.dumps([inspect.scheduled(), inspect.reserved()], default=str)
        assert str(notification.pk) not in waiting, "no retry of the push is waiting"
    assert len(push_endpoint.pushes(endpoint)) == 1


@pytest.mark.skipif(
    not SERVICES_MODE, reason="kills and restarts the Celery worker process (make test-services)"
)
def test_a_worker_killed_while_sending_an_email_leaves_it_to_the_next_worker_once(
    server: LiveServer, smtp_server: SmtpServer, celery_worker: CeleryWorker
) -> None:
    from config.celery import app

    app.control.purge()  # nothing queued by earlier tests runs in between
    chat = talk(server)
    bob_email = chat.bob.user.email
    smtp_server.hold_next(bob_email, when=telling)
    try:
        send(chat, "hello bob")
        assert smtp_server.holding.wait(WAIT), "the worker starts sending the email"
        held_at = time.monotonic()
        delivery = Delivery.objects.get(user=chat.bob.user, channel="email")
        assert (delivery.state, delivery.attempts) == ("sending", 1)
        celery_worker.kill()  # waiting for the mail server's answer to its DATA
    finally:
        smtp_server.release()
    assert len(smtp_server.held(bob_email)) == 1
    assert emails(smtp_server, chat.bob) == []

    # The task was never acknowledged: a worker that starts once the visibility timeout
    # has passed takes it back from the broker as it starts (kombu's Redis transport
    # looks again only about every 100 s after that), and the dead run's lease on the
    # delivery has run out by then.
    wait = max(WORKER_VISIBILITY_TIMEOUT_SECONDS, DELIVERY_LEASE_SECONDS) + 0.5
    time.sleep(max(0.0, held_at + wait - time.monotonic()))
    celery_worker.start()
    wait_until(lambda: emails(smtp_server, chat.bob), timeout=WAIT, message="the email, resent")
    wait_until(
        lambda: deliveries(chat.bob) == [("email", "sent", "", 2)],
        timeout=WAIT, message="the delivery recorded as sent on its second attempt",
    )  # fmt: skip
    (mail,) = emails(smtp_server, chat.bob)
    (held,) = smtp_server.held(bob_email)
    assert mail.message["Message-ID"] == held.message["Message-ID"] == f"<{delivery.pk}@parley>"
    time.sleep(1)  # nothing else of it comes later
    assert len(emails(smtp_server, chat.bob)) == 1
