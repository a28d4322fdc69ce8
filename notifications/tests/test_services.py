"""Who is told what, when, and on which channel (docs/notifications.md)."""

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.core.cache import cache
from django.utils import timezone

from accounts import services as account_services
from calls import services as call_services
from calls.models import Call
from calls.tests.support import friends, invite
from common.testing import database_dump
from messaging import services as messaging_services
from messaging.models import Conversation
from notifications import services, tasks
from notifications.models import Delivery, Kind, Notification, Preference, PushSubscription
from notifications.selectors import describe, unread_count
from notifications.tests.support import Person, direct, group, open_notifications, person, send
from realtime import presence

pytestmark = pytest.mark.django_db

MARKER = "zebra-7431-marker"


# --- Who gets a notification -------------------------------------------------------------


def test_a_message_tells_the_recipient_and_not_the_sender() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    send(alice, conversation_id, [bob])
    (notification,) = open_notifications(bob.user)
    assert notification.kind == Kind.MESSAGE
    assert notification.actor == alice.user
    assert str(notification.conversation_id) == conversation_id
    assert notification.count == 1
    assert open_notifications(alice.user) == []


def test_ten_messages_in_one_conversation_make_one_notification_counting_ten() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    for _ in range(10):
        send(alice, conversation_id, [bob])
    (notification,) = open_notifications(bob.user)
    assert notification.count == 10
    assert describe(notification).title == "New messages from @alice"
    assert describe(notification).body == "10 new messages from @alice."


def test_counting_a_message_twice_counts_it_once() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    message = send(alice, conversation_id, [bob])
    services.notify_message(message_id=message.pk)  # a retried task
    assert open_notifications(bob.user)[0].count == 1


def test_messages_sent_while_a_count_is_queued_ride_on_it(
    django_capture_on_commit_callbacks: Any,
) -> None:
    """One queued count per conversation: messages sent meanwhile queue nothing, and
    the queued task counts them all, the newest naming the actor."""
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    conversation_id = group(alice, [bob, carol])
    pending = services._message_count_pending_key(conversation_id)
    cache.set(pending, 0, 60)  # as if a task from seq 0 on were waiting in the broker
    with django_capture_on_commit_callbacks(execute=True):
        first = send(bob, conversation_id, [alice, carol], count=False)
        send(carol, conversation_id, [alice, bob], count=False)
        send(bob, conversation_id, [alice, carol], count=False)
    assert Notification.objects.count() == 0  # nothing queued, nothing counted yet

    tasks.message_sent(str(first.pk), conversation_id)

    (alices,) = open_notifications(alice.user)
    assert (alices.count, alices.actor) == (3, bob.user)
    # Senders have read what they sent: Carol has only Bob's last one unread, Bob none.
    (carols,) = open_notifications(carol.user)
    assert (carols.count, carols.actor) == (1, bob.user)
    assert open_notifications(bob.user) == []
    # The mark is gone: the next message queues its own count.
    assert cache.get(pending) is None


def test_a_message_older_than_the_queued_count_queues_its_own(
    django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hooks may run out of seq order: a message whose seq is below the queued task's
    would not be in its range, so it must not ride on it."""
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    queued: list[tuple[str, ...]] = []
    monkeypatch.setattr(tasks.message_sent, "delay", lambda *args: queued.append(args))
    pending = services._message_count_pending_key(conversation_id)

    cache.set(pending, 99, 60)  # a task counting from seq 99 on
    with django_capture_on_commit_callbacks(execute=True):
        older = send(alice, conversation_id, [bob], count=False)
    assert queued == [(str(older.pk), conversation_id)]

    cache.set(pending, older.seq, 60)  # a task counting from this message on
    with django_capture_on_commit_callbacks(execute=True):
        send(alice, conversation_id, [bob], count=False)
    assert len(queued) == 1  # the newer one rides on it


def test_every_other_member_of_a_group_is_told() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    conversation_id = group(alice, [bob, carol])
    send(bob, conversation_id, [alice, carol])
    assert [n.actor for n in open_notifications(alice.user)] == [bob.user]
    assert [n.actor for n in open_notifications(carol.user)] == [bob.user]
    assert open_notifications(bob.user) == []
    assert describe(open_notifications(carol.user)[0]).title == "New message in Climbing"


def test_a_first_message_from_a_stranger_is_a_message_request() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob, follow=False)
    send(alice, conversation_id, [bob])
    (notification,) = open_notifications(bob.user)
    assert notification.kind == Kind.MESSAGE_REQUEST
    assert describe(notification).title == "Message request from @alice"


def test_a_declined_request_tells_nothing_more() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob, follow=False)
    conversation = Conversation.objects.get(pk=conversation_id)
    send(alice, conversation_id, [bob])
    messaging_services.request_decline(user=bob.user, conversation=conversation)
    services.notifications_mark_read(user=bob.user, ids=None)
    send(alice, conversation_id, [bob])
    assert open_notifications(bob.user) == []


def test_a_muted_conversation_tells_nothing_until_the_mute_ends() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    conversation = Conversation.objects.get(pk=conversation_id)
    membership = messaging_services.conversation_mute(
        user=bob.user, conversation=conversation, seconds=3600
    )
    send(alice, conversation_id, [bob])
    assert open_notifications(bob.user) == []
    # An hour later the mute is over.
    membership.muted_until = timezone.now() - timedelta(seconds=1)
    membership.save(update_fields=["muted_until"])
    send(alice, conversation_id, [bob])
    assert len(open_notifications(bob.user)) == 1


def test_muted_until_unmuted_and_then_unmuted() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    conversation = Conversation.objects.get(pk=conversation_id)
    messaging_services.conversation_mute(user=bob.user, conversation=conversation, seconds=None)
    send(alice, conversation_id, [bob])
    assert open_notifications(bob.user) == []
    messaging_services.conversation_unmute(user=bob.user, conversation=conversation)
    send(alice, conversation_id, [bob])
    assert len(open_notifications(bob.user)) == 1


def test_muting_or_blocking_a_member_silences_them_in_a_group() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    conversation_id = group(alice, [bob, carol])
    account_services.user_mute(muter=carol.user, muted=bob.user)
    account_services.user_block(blocker=alice.user, blocked=bob.user)
    send(bob, conversation_id, [alice, carol])
    assert open_notifications(carol.user) == [], "carol mutes bob"
    assert open_notifications(alice.user) == [], "alice blocks bob"
    send(carol, conversation_id, [alice, bob])
    assert len(open_notifications(alice.user)) == 1, "others still tell"


def test_reading_the_conversation_reads_its_notification_and_opens_a_new_window() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    first = send(alice, conversation_id, [bob])
    messaging_services.read_mark(
        user=bob.user, conversation_id=first.conversation_id, seq=first.seq
    )
    assert open_notifications(bob.user) == []
    assert unread_count(user=bob.user) == 0
    send(alice, conversation_id, [bob])
    (second,) = open_notifications(bob.user)
    assert second.count == 1
    assert Notification.objects.filter(user=bob.user).count() == 2


def test_a_message_already_read_tells_nothing() -> None:
    """A task that runs late (or again) after the recipient read past the message."""
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    message = send(alice, conversation_id, [bob])
    messaging_services.read_mark(
        user=bob.user, conversation_id=message.conversation_id, seq=message.seq
    )
    services.notify_message(message_id=message.pk)
    assert open_notifications(bob.user) == []


def test_a_missed_call_is_told_once_and_an_answered_or_glare_call_never() -> None:
    alice, bob = friends("alice", "bob")
    call = invite(alice, bob)
    call_services.call_cancel(user=alice.user, device_id=alice.phones[0].device.pk, call_id=call.pk)
    assert services.notify_missed_call(call_id=call.pk) is not None
    assert services.notify_missed_call(call_id=call.pk) is not None  # again: the same one
    (notification,) = open_notifications(bob.user)
    assert notification.kind == Kind.MISSED_CALL and notification.call_id == call.pk
    assert describe(notification).title == "Missed call from @alice"

    answered = invite(alice, bob)
    call_services.call_accept(
        user=bob.user, device_id=bob.phones[0].device.pk, call_id=answered.pk, answer="x" * 20
    )
    assert services.notify_missed_call(call_id=answered.pk) is None
    assert not call_services.call_was_missed(Call.objects.get(pk=answered.pk))


def test_a_new_follower_is_told_once_while_unread() -> None:
    alice, bob = person("alice"), person("bob")
    account_services.user_follow(follower=alice.user, followee=bob.user)
    services.notify_new_follower(follower_id=alice.user.pk, followee_id=bob.user.pk)
    account_services.user_unfollow(follower=alice.user, followee=bob.user)
    account_services.user_follow(follower=alice.user, followee=bob.user)
    services.notify_new_follower(follower_id=alice.user.pk, followee_id=bob.user.pk)
    (notification,) = open_notifications(bob.user)
    assert notification.kind == Kind.NEW_FOLLOWER
    assert describe(notification).title == "@alice follows you"


def test_an_unfollow_before_the_task_runs_tells_nothing() -> None:
    alice, bob = person("alice"), person("bob")
    account_services.user_follow(follower=alice.user, followee=bob.user)
    account_services.user_unfollow(follower=alice.user, followee=bob.user)
    assert services.notify_new_follower(follower_id=alice.user.pk, followee_id=bob.user.pk) is None


# --- Marking read ------------------------------------------------------------------------


def test_marking_read_touches_only_ones_own_notifications() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    send(alice, direct(alice, bob), [bob])
    send(alice, direct(alice, carol), [carol])
    carols = open_notifications(carol.user)[0]
    assert services.notifications_mark_read(user=bob.user, ids=[carols.pk]) == 1
    assert unread_count(user=carol.user) == 1, "bob cannot read carol's"
    assert services.notifications_mark_read(user=bob.user, ids=None) == 0


# --- Email -------------------------------------------------------------------------------


def test_an_away_user_gets_one_email_with_no_content_and_a_retry_sends_nothing() -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    for _ in range(3):
        send(alice, conversation_id, [bob], text=MARKER)
    (notification,) = open_notifications(bob.user)
    assert services.deliver_email(notification_id=notification.pk) == "sent"
    assert services.deliver_email(notification_id=notification.pk) == "done_before"
    (email,) = mail.outbox
    assert email.to == [bob.user.email]
    assert email.subject == "New messages from @alice on Parley"
    assert "3 new messages from @alice." in email.body
    assert f"/c/{conversation_id}" in email.body
    delivery = Delivery.objects.get(notification=notification)
    assert delivery.state == Delivery.State.SENT
    assert email.extra_headers["Message-ID"] == f"<{delivery.pk}@parley>"
    notification.refresh_from_db()
    assert notification.emailed_count == 3
    everything = b"".join(database_dump()) + email.message().as_bytes()
    assert MARKER.encode() not in everything


def test_no_email_when_online_read_or_turned_off() -> None:
    alice, bob, carol, dave = person("alice"), person("bob"), person("carol"), person("dave")
    for someone in (bob, carol, dave):
        send(alice, direct(alice, someone), [someone])
    presence.socket_open(bob.user.pk, "socket-1")
    try:
        (bobs,) = open_notifications(bob.user)
        assert services.deliver_email(notification_id=bobs.pk) == "online"
    finally:
        presence.socket_closed(bob.user.pk, "socket-1")
    (carols,) = open_notifications(carol.user)
    services.notifications_mark_read(user=carol.user, ids=None)
    assert services.deliver_email(notification_id=carols.pk) == "read"
    services.preferences_update(user=dave.user, changes={"message": {"email": False}})
    (daves,) = open_notifications(dave.user)
    assert services.deliver_email(notification_id=daves.pk) == "preference_off"
    assert mail.outbox == []
    skipped = Delivery.objects.filter(state=Delivery.State.SKIPPED)
    assert sorted(skipped.values_list("detail", flat=True)) == ["preference_off", "read"]
    # "online" is not final: bob went away without reading, and is told after all.
    assert services.deliver_email(notification_id=bobs.pk) == "sent"
    assert [email.to for email in mail.outbox] == [[bob.user.email]]


def test_a_window_opened_while_online_is_scheduled_again_by_a_later_message(settings) -> None:
    alice, bob = person("alice"), person("bob")
    conversation_id = direct(alice, bob)
    send(alice, conversation_id, [bob])
    (notification,) = open_notifications(bob.user)
    first = notification.scheduled_at
    assert first is not None
    send(alice, conversation_id, [bob])
    notification.refresh_from_db()
    assert notification.scheduled_at == first, "not again within the email delay"
    Notification.objects.filter(pk=notification.pk).update(
        scheduled_at=first - timedelta(seconds=settings.NOTIFY_EMAIL_DELAY_SECONDS)
    )
    send(alice, conversation_id, [bob])
    notification.refresh_from_db()
    assert notification.scheduled_at > first
    assert notification.count == 3


def test_muting_or_leaving_after_the_window_opened_sends_nothing() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    conversation_id = direct(alice, bob)
    send(alice, conversation_id, [bob])
    messaging_services.conversation_mute(
        user=bob.user, conversation=Conversation.objects.get(pk=conversation_id), seconds=3600
    )
    (notification,) = open_notifications(bob.user)
    assert services.deliver_email(notification_id=notification.pk) == "muted"
    send(alice, direct(alice, carol), [carol])
    account_services.user_block(blocker=carol.user, blocked=alice.user)
    (carols,) = open_notifications(carol.user)
    assert services.deliver_email(notification_id=carols.pk) == "blocked_or_muted"
    assert mail.outbox == []


def test_a_second_run_waits_while_the_first_holds_the_delivery() -> None:
    """Two runs of one task at once (a redelivery while the first still sends): the
    second does not send; it retries after the first's lease."""
    alice, bob = person("alice"), person("bob")
    send(alice, direct(alice, bob), [bob])
    (notification,) = open_notifications(bob.user)
    target = services.Target(f"email:{notification.pk}", bob.user.pk, "email", notification)
    held = services._claim(target)
    assert held is not None
    with pytest.raises(services.DeliveryRetry) as waiting:
        services.deliver_email(notification_id=notification.pk)
    assert waiting.value.detail == "in_progress"
    assert (waiting.value.countdown or 0) > 1
    assert mail.outbox == []
    Delivery.objects.filter(pk=held.pk).update(claimed_until=timezone.now())  # lease ran out
    assert services.deliver_email(notification_id=notification.pk) == "sent"
    assert len(mail.outbox) == 1


def test_a_mail_server_failure_is_retried_and_then_sent_once(settings) -> None:
    alice, bob = person("alice"), person("bob")
    send(alice, direct(alice, bob), [bob])
    (notification,) = open_notifications(bob.user)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens there
    with pytest.raises(services.DeliveryRetry):
        services.deliver_email(notification_id=notification.pk)
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert services.deliver_email(notification_id=notification.pk) == "sent"
    assert len(mail.outbox) == 1
    delivery = Delivery.objects.get(notification=notification)
    assert (delivery.state, delivery.attempts) == (Delivery.State.SENT, 2)


def test_the_last_attempt_gives_up_cleanly(settings) -> None:
    alice, bob = person("alice"), person("bob")
    send(alice, direct(alice, bob), [bob])
    (notification,) = open_notifications(bob.user)
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9
    assert services.deliver_email(notification_id=notification.pk, final_attempt=True) == "failed"
    assert Delivery.objects.get(notification=notification).state == Delivery.State.FAILED
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert services.deliver_email(notification_id=notification.pk) == "done_before"
    assert mail.outbox == []


def test_the_digest_tells_what_stays_unread_once_a_day(settings) -> None:
    settings.DIGEST_AFTER_SECONDS = 3600
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    send(alice, direct(alice, bob), [bob])
    account_services.user_follow(follower=carol.user, followee=bob.user)
    services.notify_new_follower(follower_id=carol.user.pk, followee_id=bob.user.pk)
    later = timezone.now() + timedelta(hours=2)
    assert list(services.digest_candidates(now=later)) == [bob.user.pk]
    assert services.send_digest(user_id=bob.user.pk, now=later) == "sent"
    (email,) = mail.outbox
    assert email.subject == "What you missed on Parley"
    assert "A new message from @alice." in email.body
    assert "@carol started following you." in email.body
    assert list(services.digest_candidates(now=later)) == [], "all told now"
    assert services.send_digest(user_id=bob.user.pk, now=later) == "nothing"
    assert len(mail.outbox) == 1


def test_no_digest_when_turned_off() -> None:
    alice, bob = person("alice"), person("bob")
    send(alice, direct(alice, bob), [bob])
    services.preferences_update(user=bob.user, changes={"digest": {"email": False}})
    later = timezone.now() + timedelta(days=1)
    assert services.send_digest(user_id=bob.user.pk, now=later) == "preference_off"
    assert mail.outbox == []


# --- Preferences -------------------------------------------------------------------------


def test_preferences_default_and_change_all_or_nothing() -> None:
    bob = person("bob")
    from notifications.selectors import preferences_for

    before = preferences_for(user=bob.user)
    assert before["message"] == {"email": True, "push": True}
    assert before["new_follower"] == {"email": False, "push": True}
    assert before["digest"] == {"email": True}
    with pytest.raises(services.ApplicationError) as refused:
        services.preferences_update(
            user=bob.user, changes={"message": {"email": False}, "digest": {"push": True}}
        )
    assert refused.value.field == "preferences.digest.push"
    assert Preference.objects.filter(user=bob.user).count() == 0, "nothing half-written"
    after = services.preferences_update(user=bob.user, changes={"missed_call": {"push": False}})
    assert after["missed_call"] == {"email": True, "push": False}


# --- Push subscriptions ------------------------------------------------------------------

P256DH = "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM"
AUTH = "tBHItJI5svbpez7KI4CCXg"


def subscribe(
    someone: Person, endpoint: str, *, p256dh: str = P256DH, auth: str = AUTH
) -> PushSubscription:
    """A push subscription of someone's (last) browser device."""
    return services.push_subscribe(
        user=someone.user, device_id=someone.phones[-1].device.pk, endpoint=endpoint,
        p256dh=p256dh, auth=auth,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ("http://fcm.googleapis.com/fcm/send/x", "endpoint"),  # not HTTPS
        ("https://169.254.169.254/latest", "endpoint"),  # not a push service
        ("https://fcm.googleapis.com.evil.example/x", "endpoint"),
        ("https://user:pw@fcm.googleapis.com/x", "endpoint"),
        ("https://evil.example\\.fcm.googleapis.com/x", "endpoint"),  # parsers disagree
    ],
)
def test_a_push_endpoint_outside_the_push_services_is_refused(endpoint: str, field: str) -> None:
    bob = person("bob")
    with pytest.raises(services.ApplicationError) as refused:
        subscribe(bob, endpoint)
    assert refused.value.field == field
    assert not PushSubscription.objects.exists()


def test_bad_push_keys_are_refused_and_a_good_subscription_replaces_its_endpoint() -> None:
    bob, carol = person("bob"), person("carol")
    endpoint = "https://fcm.googleapis.com/fcm/send/abc"
    with pytest.raises(services.ApplicationError) as refused:
        subscribe(bob, endpoint, p256dh="AAAA")
    assert refused.value.field == "keys.p256dh"
    with pytest.raises(services.ApplicationError) as refused:
        subscribe(bob, endpoint, auth="AAAA")
    assert refused.value.field == "keys.auth"
    assert not PushSubscription.objects.exists()
    subscribe(bob, endpoint)
    # Someone who knows only the endpoint cannot take the subscription over...
    with pytest.raises(services.Conflict) as refused:
        subscribe(carol, endpoint, auth="AAAAAAAAAAAAAAAAAAAAAA")
    assert refused.value.code == "endpoint_taken"
    assert PushSubscription.objects.get().user == bob.user
    # ...but carol signing in on the same browser (its own auth secret) can.
    subscribe(carol, endpoint)
    (subscription,) = PushSubscription.objects.all()
    assert subscription.user == carol.user
    assert subscription.device == carol.phones[-1].device


def test_push_subscriptions_per_user_are_bounded() -> None:
    bob = person("bob")
    for index in range(services.MAX_PUSH_SUBSCRIPTIONS):
        subscribe(bob, f"https://fcm.googleapis.com/{index}")
    with pytest.raises(services.ApplicationError) as refused:
        subscribe(bob, "https://fcm.googleapis.com/one-more")
    assert refused.value.code == "too_many_subscriptions"
    # The same browser subscribing again is not one more.
    subscribe(bob, "https://fcm.googleapis.com/0")


def test_unlinking_a_browser_removes_its_push_subscription() -> None:
    bob = person("bob", phones=2)
    subscribe(bob, "https://fcm.googleapis.com/fcm/send/abc")
    account_services.device_revoke(user=bob.user, device_id=bob.phones[1].device.pk)
    assert not PushSubscription.objects.exists()


def test_no_push_to_an_online_user_or_when_turned_off() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    for someone in (bob, carol):
        subscribe(someone, f"https://fcm.googleapis.com/fcm/send/{someone.user.pk}")
        send(alice, direct(alice, someone), [someone])
    presence.socket_open(bob.user.pk, "socket-1")
    try:
        (bobs,) = open_notifications(bob.user)
        assert set(services.deliver_push(notification_id=bobs.pk).values()) == {"online"}
    finally:
        presence.socket_closed(bob.user.pk, "socket-1")
    services.preferences_update(user=carol.user, changes={"message": {"push": False}})
    (carols,) = open_notifications(carol.user)
    assert set(services.deliver_push(notification_id=carols.pk).values()) == {"preference_off"}


# --- Pruning -----------------------------------------------------------------------------


def test_prune_forgets_old_notifications_and_failing_subscriptions() -> None:
    alice, bob, carol = person("alice"), person("bob"), person("carol")
    send(alice, direct(alice, bob), [bob])
    send(alice, direct(alice, carol), [carol])
    services.notifications_mark_read(user=bob.user, ids=None)
    subscription = subscribe(bob, "https://fcm.googleapis.com/fcm/send/abc")
    PushSubscription.objects.filter(pk=subscription.pk).update(
        failing_since=timezone.now() - timedelta(days=8)
    )
    now = timezone.now() + timedelta(days=31)
    pruned = services.notifications_prune(now=now)
    assert pruned["push_subscriptions"] == 1
    assert not Notification.objects.filter(user=bob.user).exists(), "read a month ago"
    assert Notification.objects.filter(user=carol.user).exists(), "unread: kept for 90 days"
    services.notifications_prune(now=timezone.now() + timedelta(days=91))
    assert not Notification.objects.exists()
