"""The calls API: history as each party sees it, one call, the calls ringing for a
device; no one reads another's calls."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from calls.models import Call
from calls.tests.support import friends, invite, make_call

pytestmark = pytest.mark.django_db

S = Call.State


def test_history_shows_direction_peer_duration_and_missed() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    now = timezone.now()
    talked = make_call(
        alice, bob, S.ENDED, answered_at=now - timedelta(seconds=70), ended_at=now,
        end_reason="hangup", created_at=now - timedelta(seconds=80),
    )  # fmt: skip
    missed = make_call(carol, alice, S.MISSED, end_reason="timeout", ended_at=now, created_at=now)
    reply = alice.phones[0].api.get("/api/v1/calls")
    assert reply.status_code == 200
    rows = {row["id"]: row for row in reply.json()["results"]}
    assert list(rows) == [str(missed.pk), str(talked.pk)]  # newest first
    assert rows[str(talked.pk)]["direction"] == "outgoing"
    assert rows[str(talked.pk)]["peer"]["handle"] == "bob"
    assert rows[str(talked.pk)]["duration"] == 70 and rows[str(talked.pk)]["missed"] is False
    assert rows[str(missed.pk)]["direction"] == "incoming"
    assert rows[str(missed.pk)]["missed"] is True and rows[str(missed.pk)]["duration"] is None
    # Bob sees the same call from the other side; carol's call is not his.
    (bobs,) = bob.phones[0].api.get("/api/v1/calls").json()["results"]
    assert (bobs["id"], bobs["direction"], bobs["peer"]["handle"]) == (
        str(talked.pk), "incoming", "alice",
    )  # fmt: skip
    with_bob = alice.phones[0].api.get(f"/api/v1/calls?peer={bob.user.pk}").json()["results"]
    assert [row["id"] for row in with_bob] == [str(talked.pk)]


def test_history_costs_the_same_queries_for_many_calls() -> None:
    alice, bob, carol = friends("alice", "bob", "carol")
    make_call(alice, bob, S.ENDED)
    api = alice.phones[0].api
    api.get("/api/v1/calls")  # the first request of a token also notes its use
    with CaptureQueriesContext(connection) as few:
        assert api.get("/api/v1/calls").status_code == 200
    for index in range(10):
        make_call(alice if index % 2 else carol, carol if index % 2 else alice, S.MISSED)
    with CaptureQueriesContext(connection) as many:
        assert len(api.get("/api/v1/calls").json()["results"]) == 11
    assert len(many) == len(few)


def test_a_call_is_only_readable_by_its_parties() -> None:
    alice, bob, eve = friends("alice", "bob", "eve")
    call = make_call(alice, bob, S.ENDED)
    assert bob.phones[0].api.get(f"/api/v1/calls/{call.pk}").status_code == 200
    refused = eve.phones[0].api.get(f"/api/v1/calls/{call.pk}")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "call_not_found"
    bad = alice.phones[0].api.get("/api/v1/calls?peer=nope")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "peer"
    assert eve.phones[0].api.get("/api/v1/calls").json()["results"] == []


def test_a_device_that_connects_while_it_rings_gets_its_own_offer() -> None:
    alice, bob = friends("alice", "bob", phones=2)
    call = invite(alice, bob)
    for phone in bob.phones:
        (ringing,) = phone.api.get("/api/v1/calls/ringing").json()["results"]
        assert ringing["call_id"] == str(call.pk)
        assert ringing["offer"] == call.offers[str(phone.device.pk)]
        assert ringing["caller"]["handle"] == "alice" and ringing["relay_only"] is False
    assert alice.phones[0].api.get("/api/v1/calls/ringing").json()["results"] == []
    late = bob.add_phone()  # added after the invite: it was not rung
    assert late.api.get("/api/v1/calls/ringing").json()["results"] == []
    Call.objects.filter(pk=call.pk).update(ring_deadline=timezone.now() - timedelta(seconds=1))
    assert bob.phones[0].api.get("/api/v1/calls/ringing").json()["results"] == []


def test_the_ringing_list_costs_the_same_queries_for_many_calls() -> None:
    alice, bob, *others = friends("alice", "bob", "carol", "dave", "erin")
    api = bob.phones[0].api
    invite(alice, bob)
    api.get("/api/v1/calls/ringing")  # the first request of a token also notes its use
    with CaptureQueriesContext(connection) as one:
        assert len(api.get("/api/v1/calls/ringing").json()["results"]) == 1
    for caller in others:
        invite(caller, bob)
    with CaptureQueriesContext(connection) as four:
        assert len(api.get("/api/v1/calls/ringing").json()["results"]) == 4
    assert len(four) <= len(one) + 3  # one follow lookup per caller, nothing more


def test_anonymous_callers_get_401() -> None:
    from rest_framework.test import APIClient

    for path in ("/api/v1/calls", f"/api/v1/calls/{uuid.uuid4()}", "/api/v1/calls/ringing"):
        assert APIClient().get(path).status_code == 401
