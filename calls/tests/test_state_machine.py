"""The call state machine, every (state, action) pair: legal moves land where the
table in docs/calls.md says; every other pair is refused and changes nothing."""

import itertools
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from calls.models import Call
from calls.services import Action, transition
from calls.tests.support import friends, make_call
from common.errors import ApplicationError, Conflict

S = Call.State
R = Call.EndReason

# Written out again here (not imported) so that a change to the service's table has
# to be a change to this test too.
LEGAL: dict[tuple[str, Action], tuple[str, str]] = {
    (S.RINGING, Action.ACCEPT): (S.ACTIVE, ""),
    (S.RINGING, Action.DECLINE): (S.DECLINED, R.DECLINED),
    (S.RINGING, Action.BUSY): (S.BUSY, R.BUSY),
    (S.RINGING, Action.CANCEL): (S.CANCELLED, R.CANCELLED),
    (S.RINGING, Action.TIMEOUT): (S.MISSED, R.TIMEOUT),
    (S.RINGING, Action.GLARE): (S.CANCELLED, R.GLARE),
    (S.RINGING, Action.FAIL): (S.FAILED, R.FAILED),
    (S.ACTIVE, Action.HANGUP): (S.ENDED, R.HANGUP),
    (S.ACTIVE, Action.FAIL): (S.ENDED, R.FAILED),
}
PAIRS = list(itertools.product(list(S), list(Action)))


@pytest.mark.django_db
@pytest.mark.parametrize(("state", "action"), PAIRS, ids=[f"{s}-{a}" for s, a in PAIRS])
def test_every_transition(state: str, action: Action) -> None:
    alice, bob = friends("alice", "bob")
    call = make_call(alice, bob, state, offers={str(bob.phones[0].device.pk): "x"})
    before = Call.objects.filter(pk=call.pk).values().get()
    if (state, action) in LEGAL:
        with transaction.atomic():
            transition(call, action, now=timezone.now())
        stored = Call.objects.get(pk=call.pk)
        assert (stored.state, stored.end_reason) == LEGAL[(state, action)]
        if stored.state == S.ACTIVE:
            assert stored.answered_at is not None and stored.ended_at is None
            assert stored.offers  # still needed until the call ends
        else:
            assert stored.ended_at is not None
            assert stored.offers == {} and stored.answer == ""
    else:
        with pytest.raises(Conflict) as refused:
            transition(call, action, now=timezone.now())
        assert refused.value.code == "illegal_transition"
        assert refused.value.extra["state"] == state
        assert Call.objects.filter(pk=call.pk).values().get() == before


@pytest.mark.django_db
def test_a_hangup_may_say_the_connection_failed_and_nothing_else() -> None:
    alice, bob = friends("alice", "bob")
    call = make_call(alice, bob, S.ACTIVE)
    with pytest.raises(ApplicationError) as refused:
        transition(call, Action.HANGUP, now=timezone.now(), reason=R.GLARE)
    assert refused.value.field == "reason"
    assert Call.objects.get(pk=call.pk).state == S.ACTIVE
    transition(call, Action.HANGUP, now=timezone.now(), reason=R.FAILED)
    assert Call.objects.get(pk=call.pk).end_reason == R.FAILED


@pytest.mark.django_db
def test_the_duration_is_from_answer_to_end() -> None:
    alice, bob = friends("alice", "bob")
    started = timezone.now() - timedelta(seconds=95)
    call = make_call(alice, bob, S.ACTIVE, answered_at=started)
    transition(call, Action.HANGUP, now=started + timedelta(seconds=83))
    assert Call.objects.get(pk=call.pk).duration == 83
