"""Who may call whom, busy, glare, the device list, limits, relay, the ring timeout
and the sweep: each through the service a socket frame calls."""

import base64
import hashlib
import hmac
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from accounts import services as account_services
from accounts.models import CallPolicy, Device
from calls import selectors, services, tasks
from calls.models import Call
from calls.tests.support import boxed, friends, invite, make_call, offers_for
from common.errors import ApplicationError, Conflict, NotFound, PermissionDenied, RateLimited
from messaging.tests.support import person

pytestmark = pytest.mark.django_db

S = Call.State


def test_an_invite_rings_with_one_offer_per_device_and_a_deadline() -> None:
    alice, bob = friends("alice", "bob", phones=2)
    offers = offers_for(bob)
    call = services.call_invite(
        caller=alice.user, caller_device_id=alice.phones[0].device.pk, call_id=uuid.uuid4(),
        callee_handle="@BOB", media="video", offers=offers,
    )  # fmt: skip
    stored = Call.objects.get(pk=call.pk)
    assert stored.state == S.RINGING and stored.media == "video"
    assert stored.offers == offers and stored.caller_device == alice.phones[0].device
    assert 59 <= (stored.ring_deadline - stored.created_at).total_seconds() <= 60


@pytest.mark.parametrize(
    ("setup", "code", "error"),
    [
        ("policy_nobody", "policy_nobody", PermissionDenied),
        ("blocked", "blocked", PermissionDenied),
        ("blocked_by", "user_not_found", NotFound),
        ("mutual", "policy_mutual", PermissionDenied),
    ],
)
def test_privacy_and_blocks_refuse_an_invite_and_store_nothing(
    setup: str, code: str, error: type[ApplicationError]
) -> None:
    alice, bob = friends("alice", "bob")
    if setup == "policy_nobody":
        bob.user.call_policy = CallPolicy.NOBODY
        bob.user.save()
    elif setup == "blocked":
        account_services.user_block(blocker=alice.user, blocked=bob.user)
    elif setup == "blocked_by":
        account_services.user_block(blocker=bob.user, blocked=alice.user)
    elif setup == "mutual":
        bob.user.call_policy = CallPolicy.MUTUAL
        bob.user.save()
        account_services.user_unfollow(follower=alice.user, followee=bob.user)
    with pytest.raises(error) as refused:
        invite(alice, bob)
    assert refused.value.code == code
    with pytest.raises(error):
        services.call_prepare(caller=alice.user, callee_handle="bob", media="audio")
    assert not Call.objects.exists()


def test_an_unknown_callee_is_named_in_the_error() -> None:
    (alice,) = friends("alice")
    with pytest.raises(NotFound) as refused:
        services.call_prepare(caller=alice.user, callee_handle="nobody", media="audio")
    assert refused.value.field == "callee"


def test_offers_must_name_exactly_the_callees_active_devices() -> None:
    alice, bob = friends("alice", "bob", phones=2)
    partial = {str(bob.phones[0].device.pk): boxed()}
    with pytest.raises(Conflict) as refused:
        services.call_invite(
            caller=alice.user, caller_device_id=alice.phones[0].device.pk,
            call_id=uuid.uuid4(), callee_handle="bob", media="audio", offers=partial,
        )  # fmt: skip
    assert refused.value.code == "device_list_changed" and refused.value.field == "offers"
    assert refused.value.extra["device_ids"] == sorted(str(p.device.pk) for p in bob.phones)
    extra = {**offers_for(bob), str(uuid.uuid4()): boxed()}
    with pytest.raises(Conflict):
        services.call_invite(
            caller=alice.user, caller_device_id=alice.phones[0].device.pk,
            call_id=uuid.uuid4(), callee_handle="bob", media="audio", offers=extra,
        )  # fmt: skip
    assert not Call.objects.exists()


def test_a_stranger_call_needs_a_relay_and_is_refused_without_one(settings) -> None:
    alice = person("alice", history_key=False)
    bob = person("bob", history_key=False)  # follows nobody: alice is a stranger to bob
    bob.user.call_policy = CallPolicy.EVERYONE
    bob.user.save()
    settings.TURN_URLS, settings.TURN_SECRET = [], ""
    with pytest.raises(Conflict) as refused:
        invite(alice, bob)
    assert refused.value.code == "relay_unavailable"
    settings.TURN_URLS, settings.TURN_SECRET = ["turn:127.0.0.1:3478"], "s3cret"
    call = invite(alice, bob)
    assert selectors.callee_relay_only(callee=bob.user, caller=alice.user) is True
    assert selectors.caller_relay_only(caller=alice.user) is False
    assert call.state == S.RINGING


def test_relay_calls_makes_the_chooser_relay_only_even_with_friends(settings) -> None:
    settings.TURN_URLS, settings.TURN_SECRET = ["turn:127.0.0.1:3478"], "s3cret"
    alice, bob = friends("alice", "bob")
    assert selectors.callee_relay_only(callee=bob.user, caller=alice.user) is False
    bob.user.relay_calls = True
    alice.user.relay_calls = True
    assert selectors.callee_relay_only(callee=bob.user, caller=alice.user) is True
    assert selectors.caller_relay_only(caller=alice.user) is True


def test_turn_credentials_follow_the_turn_rest_scheme(settings) -> None:
    settings.TURN_URLS = ["turn:127.0.0.1:3478?transport=udp"]
    settings.TURN_SECRET = "s3cret"
    settings.TURN_CREDENTIAL_SECONDS = 600
    (alice,) = friends("alice")
    (server,) = selectors.ice_servers_for(user=alice.user)
    expiry, user_id = server["username"].split(":")
    assert user_id == str(alice.user.pk)
    assert 595 <= int(expiry) - time.time() <= 600
    expected = hmac.new(b"s3cret", server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == expected
    assert server["urls"] == ["turn:127.0.0.1:3478?transport=udp"]


def test_a_callee_in_a_call_is_busy_and_the_call_is_stored_as_busy() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    make_call(bob, carol, S.ACTIVE)
    call = invite(alice, bob)
    assert (call.state, call.end_reason) == (S.BUSY, "busy")
    view = selectors.CallView(call=call, viewer=bob.user)
    assert view.missed is True and view.direction == "incoming"


def test_a_caller_already_dialling_is_refused() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    invite(alice, bob)
    with pytest.raises(Conflict) as refused:
        invite(alice, carol)
    assert refused.value.code == "caller_busy"
    assert Call.objects.count() == 1


def test_a_ringing_incoming_call_does_not_make_anyone_busy() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    invite(carol, bob)
    assert invite(alice, bob).state == S.RINGING


def test_a_call_past_its_deadline_no_longer_makes_anyone_busy() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    old = make_call(bob, carol, S.RINGING, ring_deadline=timezone.now() - timedelta(seconds=1))
    assert invite(alice, bob).state == S.RINGING
    assert Call.objects.get(pk=old.pk).state == S.MISSED


@pytest.mark.parametrize("lower", ["first", "second"])
def test_glare_the_lower_call_id_goes_on(lower: str) -> None:
    alice, bob = friends("alice", "bob")
    low, high = sorted([uuid.uuid4(), uuid.uuid4()], key=str)
    first_id, second_id = (low, high) if lower == "first" else (high, low)
    first = invite(alice, bob, call_id=first_id)
    second = invite(bob, alice, call_id=second_id)
    first.refresh_from_db()
    winner, loser = (first, second) if lower == "first" else (second, first)
    assert winner.state == S.RINGING
    assert (loser.state, loser.end_reason) == (S.CANCELLED, "glare")
    for viewer in (alice.user, bob.user):
        assert selectors.CallView(call=loser, viewer=viewer).missed is False


def test_invites_are_rate_limited(settings) -> None:
    settings.CALL_INVITES_PER_MINUTE = 2
    alice, bob = friends("alice", "bob")
    for _ in range(2):
        call = invite(alice, bob)
        services.call_cancel(user=alice.user, device_id=alice.phones[0].device.pk, call_id=call.pk)
    with pytest.raises(RateLimited):
        invite(alice, bob)
    assert Call.objects.count() == 2


def test_only_the_right_party_and_device_may_act() -> None:
    alice, bob, eve = friends("alice", "bob", "eve")
    alice.add_phone()
    call = invite(alice, bob)
    with pytest.raises(NotFound):
        services.call_decline(user=eve.user, device_id=eve.phones[0].device.pk, call_id=call.pk)
    with pytest.raises(PermissionDenied) as refused:
        services.call_decline(user=alice.user, device_id=alice.phones[0].device.pk, call_id=call.pk)
    assert refused.value.code == "not_callee"
    with pytest.raises(PermissionDenied) as refused:
        services.call_cancel(user=alice.user, device_id=alice.phones[1].device.pk, call_id=call.pk)
    assert refused.value.code == "not_call_device"
    with pytest.raises(Conflict) as illegal:
        services.call_hangup(user=alice.user, device_id=alice.phones[0].device.pk, call_id=call.pk)
    assert illegal.value.code == "illegal_transition"
    services.call_accept(
        user=bob.user, device_id=bob.phones[0].device.pk, call_id=call.pk, answer=boxed()
    )
    with pytest.raises(PermissionDenied):
        services.call_hangup(user=alice.user, device_id=alice.phones[1].device.pk, call_id=call.pk)
    ended = services.call_hangup(user=bob.user, device_id=bob.phones[0].device.pk, call_id=call.pk)
    assert (ended.state, ended.end_reason) == (S.ENDED, "hangup")
    assert ended.offers == {} and ended.answer == ""


def test_accepting_after_the_deadline_finds_a_missed_call() -> None:
    alice, bob = friends("alice", "bob")
    call = invite(alice, bob)
    Call.objects.filter(pk=call.pk).update(ring_deadline=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict) as refused:
        services.call_accept(
            user=bob.user, device_id=bob.phones[0].device.pk, call_id=call.pk, answer=boxed()
        )
    assert refused.value.extra["state"] == S.MISSED
    stored = Call.objects.get(pk=call.pk)
    assert stored.callee_device is None and stored.answer == ""
    assert selectors.CallView(call=stored, viewer=bob.user).state == S.MISSED


def test_candidates_only_flow_in_a_call_in_progress() -> None:
    alice, bob = friends("alice", "bob")
    call = invite(alice, bob)
    with pytest.raises(Conflict) as refused:
        services.call_relay_candidate(
            user=alice.user, device_id=alice.phones[0].device.pk, call_id=call.pk,
            candidate=boxed(),
        )  # fmt: skip
    assert refused.value.code == "call_not_active"


def test_the_ring_timeout_task_run_twice_marks_missed_once() -> None:
    alice, bob = friends("alice", "bob")
    call = invite(alice, bob)
    assert tasks.ring_timeout(str(call.pk)) is False  # early: nothing happens
    assert Call.objects.get(pk=call.pk).state == S.RINGING
    Call.objects.filter(pk=call.pk).update(ring_deadline=timezone.now() - timedelta(seconds=1))
    assert tasks.ring_timeout(str(call.pk)) is True
    first = Call.objects.get(pk=call.pk)
    assert (first.state, first.end_reason) == (S.MISSED, "timeout")
    assert tasks.ring_timeout(str(call.pk)) is False
    again = Call.objects.get(pk=call.pk)
    assert (again.state, again.ended_at) == (S.MISSED, first.ended_at)
    assert tasks.ring_timeout(str(uuid.uuid4())) is False  # a call since deleted


def test_a_ringing_call_past_its_deadline_reads_as_missed_before_any_task() -> None:
    alice, bob = friends("alice", "bob")
    call = make_call(alice, bob, S.RINGING, ring_deadline=timezone.now() - timedelta(seconds=1))
    view = selectors.CallView(call=call, viewer=bob.user)
    assert (view.state, view.end_reason, view.missed) == (S.MISSED, "timeout", True)


def test_the_sweep_closes_missed_and_dead_calls_and_leaves_live_ones(settings) -> None:
    settings.CALL_STALE_SECONDS = 120
    alice, bob, carol, dave = friends("alice", "bob", "carol", "dave")
    long_ago = timezone.now() - timedelta(minutes=10)
    rung_out = make_call(alice, bob, S.RINGING, ring_deadline=long_ago)
    dead = make_call(carol, dave, S.ACTIVE, answered_at=long_ago)
    lively = make_call(bob, alice, S.ACTIVE, answered_at=long_ago)
    Device.objects.filter(pk=alice.phones[0].device.pk).update(last_seen_at=timezone.now())
    revoked = make_call(dave, carol, S.ACTIVE, answered_at=long_ago)
    Device.objects.filter(pk=carol.phones[0].device.pk).update(revoked_at=timezone.now())
    Device.objects.filter(pk=dave.phones[0].device.pk).update(last_seen_at=timezone.now())
    assert tasks.close_stale_calls() == 3
    states = {c.pk: (c.state, c.end_reason) for c in Call.objects.all()}
    assert states[rung_out.pk] == (S.MISSED, "timeout")
    assert states[dead.pk] == (S.ENDED, "connection_lost")
    assert states[revoked.pk] == (S.ENDED, "connection_lost")
    assert states[lively.pk] == (S.ACTIVE, "")
    assert tasks.close_stale_calls() == 0


@pytest.mark.django_db(transaction=True)
def test_two_devices_accepting_at_once_exactly_one_wins() -> None:
    """A row lock decides; on `make test-services` with real concurrency on PostgreSQL."""
    alice, bob = friends("alice", "bob", phones=1)
    for _ in range(3):
        bob.add_phone()
    call = invite(alice, bob)
    start = threading.Barrier(len(bob.phones))

    def accept(device_id: uuid.UUID) -> str:
        try:
            start.wait(timeout=30)
            services.call_accept(
                user=bob.user, device_id=device_id, call_id=call.pk, answer=boxed()
            )
            return "won"
        except ApplicationError as error:
            return error.code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(bob.phones)) as pool:
        results = list(pool.map(accept, [phone.device.pk for phone in bob.phones]))

    assert results.count("won") == 1, results
    assert set(results) == {"won", "call_answered_elsewhere"}
    stored = Call.objects.get(pk=call.pk)
    winner = bob.phones[results.index("won")].device.pk
    assert stored.state == S.ACTIVE and stored.callee_device_id == winner


def test_revoking_a_device_ends_its_calls() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    dialling = invite(alice, bob)
    talking = make_call(carol, bob, S.ACTIVE)
    account_services.device_revoke(user=bob.user, device_id=bob.phones[0].device.pk)
    assert Call.objects.get(pk=dialling.pk).state == S.RINGING  # bob was rung, not dialling
    ended = Call.objects.get(pk=talking.pk)
    assert (ended.state, ended.end_reason) == (S.ENDED, "unavailable")
    account_services.device_revoke(user=alice.user, device_id=alice.phones[0].device.pk)
    stopped = Call.objects.get(pk=dialling.pk)
    assert (stopped.state, stopped.end_reason) == (S.FAILED, "unavailable")


def test_an_active_call_whose_devices_are_gone_no_longer_makes_anyone_busy(settings) -> None:
    """No sweep needed: the next invite closes it (the embedded default runs no beat)."""
    settings.CALL_STALE_SECONDS = 120
    alice, bob, carol = friends("alice", "bob", "carol")
    dead = make_call(bob, carol, S.ACTIVE, answered_at=timezone.now() - timedelta(minutes=5))
    assert invite(alice, bob).state == S.RINGING
    closed = Call.objects.get(pk=dead.pk)
    assert (closed.state, closed.end_reason) == (S.ENDED, "connection_lost")


def test_prepare_and_invite_read_the_relay_setting_as_stored_now(settings) -> None:
    settings.TURN_URLS, settings.TURN_SECRET = ["turn:127.0.0.1:3478"], "s3cret"
    alice, bob = friends("alice", "bob")
    stale_copy = alice.user  # what a socket loaded when it connected
    type(stale_copy).objects.filter(pk=stale_copy.pk).update(relay_calls=True)
    prepared = services.call_prepare(caller=stale_copy, callee_handle="bob", media="audio")
    assert prepared.relay_only is True
    settings.TURN_URLS, settings.TURN_SECRET = [], ""
    with pytest.raises(Conflict) as refused:
        invite(alice, bob)
    assert refused.value.code == "relay_unavailable"


def test_a_call_id_taken_meanwhile_is_a_conflict_not_a_crash() -> None:
    alice, bob, carol, dave = friends("alice", "bob", "carol", "dave")
    taken = invite(alice, bob)
    copy = Call(
        id=taken.pk, caller=carol.user, callee=dave.user, media="audio",
        ring_deadline=timezone.now(),
    )  # fmt: skip
    with pytest.raises(Conflict) as refused:
        services._insert(copy)
    assert (refused.value.code, refused.value.field) == ("call_exists", "call_id")
    assert Call.objects.get(pk=taken.pk).caller == alice.user


def test_suspending_an_account_ends_its_calls() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    ringing = invite(alice, bob)
    talking = make_call(carol, alice, S.ACTIVE)
    account_services.user_suspend(user=alice.user, until=timezone.now() + timedelta(days=1))
    for call in (ringing, talking):
        call.refresh_from_db()
        assert call.end_reason == "unavailable" and call.ended_at is not None
    assert (ringing.state, talking.state) == (S.FAILED, S.ENDED)
