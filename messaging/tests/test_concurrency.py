"""Concurrent senders into one conversation get gap-free, unique seqs (a row lock on the
conversation). On `make test-services` this runs on PostgreSQL with real concurrency."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from messaging import services
from messaging.models import Conversation, Message
from messaging.serializers import EnvelopeSerializer
from messaging.tests.support import envelope, person

SENDERS = 20


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_senders_get_seqs_one_to_n() -> None:
    people = [person(f"sender{index}", history_key=False) for index in range(SENDERS)]
    creator = people[0]
    conversation = services.conversation_create_group(
        creator=creator.user, name="Crowd", members=[p.user for p in people[1:]]
    )
    for someone in people[1:]:
        services.request_accept(user=someone.user, conversation=conversation)
    envelopes = []
    for someone in people:
        body, _ = envelope(
            sender=someone.phones[0], conversation_id=conversation.pk, recipients=people
        )
        parsed = EnvelopeSerializer(data=body)
        assert parsed.is_valid(), parsed.errors
        envelopes.append((someone, parsed.to_envelope()))

    start = threading.Barrier(SENDERS)

    def send(item: tuple) -> int:
        someone, sealed = item
        try:
            start.wait(timeout=30)
            message, created = services.message_send(
                sender=someone.user, conversation_id=conversation.pk, envelope=sealed,
                token=someone.phones[0].token,
            )  # fmt: skip
            assert created
            return message.seq
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=SENDERS) as pool:
        seqs = list(pool.map(send, envelopes))

    assert sorted(seqs) == list(range(1, SENDERS + 1))
    stored = list(Message.objects.filter(conversation=conversation).values_list("seq", flat=True))
    assert sorted(stored) == list(range(1, SENDERS + 1))
    assert Conversation.objects.get(pk=conversation.pk).last_seq == SENDERS


@pytest.mark.django_db(transaction=True)
def test_sending_while_other_devices_mark_read_does_not_deadlock() -> None:
    """message_send locks the conversation then the sender's membership; read_mark must
    not take them in the other order (PostgreSQL would report a deadlock)."""
    alice, bob = person("alice_dl"), person("bob_dl")
    conversation, _ = services.conversation_get_or_create_direct(user=alice.user, other=bob.user)
    services.request_accept(user=bob.user, conversation=conversation)
    envelopes = []
    for _ in range(10):
        body, _ = envelope(
            sender=alice.phones[0], conversation_id=conversation.pk, recipients=[alice, bob]
        )
        parsed = EnvelopeSerializer(data=body)
        assert parsed.is_valid()
        envelopes.append(parsed.to_envelope())

    def work(index: int) -> None:
        try:
            if index % 2:
                services.message_send(
                    sender=alice.user, conversation_id=conversation.pk,
                    envelope=envelopes[index // 2],
                )  # fmt: skip
            else:
                services.read_mark(user=alice.user, conversation_id=conversation.pk, seq=index)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(20)))  # re-raises any error, a deadlock included
    assert Message.objects.filter(conversation=conversation).count() == 10
