"""The rules of sending, and which refusal comes first, on the hand-written send path
(messaging.selectors.message_send_context): the same in both suites, SQLite and
PostgreSQL."""

import uuid
from typing import Any

import pytest

from accounts import services as account_services
from common.errors import ApplicationError
from messaging import services
from messaging.models import Conversation, Membership, Message
from messaging.serializers import EnvelopeSerializer
from messaging.tests.support import Person, Phone, envelope, person

pytestmark = pytest.mark.django_db


@pytest.fixture
def pair() -> tuple[Person, Person, Conversation]:
    alice, bob = person("ruleal", phones=2), person("rulebo")
    account_services.user_follow(follower=bob.user, followee=alice.user)  # no request
    conversation, _ = services.conversation_get_or_create_direct(user=alice.user, other=bob.user)
    return alice, bob, conversation


def _send(
    phone: Phone, conversation_id: Any, recipients: list[Person], **kwargs: Any
) -> tuple[Message, bool]:
    body, _ = envelope(
        sender=phone, conversation_id=conversation_id, recipients=recipients, **kwargs
    )
    return _send_body(phone, conversation_id, body)


def _send_body(phone: Phone, conversation_id: Any, body: dict[str, Any]) -> tuple[Message, bool]:
    serializer = EnvelopeSerializer(data=body)
    assert serializer.is_valid(), serializer.errors
    return services.message_send(
        sender=phone.user,
        conversation_id=uuid.UUID(str(conversation_id)),
        envelope=serializer.to_envelope(),
        token=phone.token,
    )


def _refusal(phone: Phone, conversation_id: Any, body: dict[str, Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as refused:
        _send_body(phone, conversation_id, body)
    return refused.value


def test_a_send_stores_the_next_seq_and_marks_the_sender_read(pair) -> None:
    alice, bob, conversation = pair
    first, created = _send(alice.phones[0], conversation.pk, [alice, bob])
    second, _ = _send(alice.phones[0], conversation.pk, [alice, bob])
    assert created and (first.seq, second.seq) == (1, 2)
    conversation.refresh_from_db()
    assert conversation.last_seq == 2 and conversation.last_message_at is not None
    stored = Message.objects.get(pk=second.pk)
    assert bytes(stored.ciphertext) == bytes(second.ciphertext)
    assert stored.keys == second.keys and stored.franking_stamp == second.franking_stamp
    assert stored.sender_device_id == alice.phones[0].device.pk
    mine = Membership.objects.get(conversation=conversation, user=alice.user)
    theirs = Membership.objects.get(conversation=conversation, user=bob.user)
    assert (mine.last_read_seq, theirs.last_read_seq) == (2, 0)


def test_a_client_id_used_in_another_conversation_is_409_and_stores_nothing(pair) -> None:
    alice, bob, conversation = pair
    carol = person("rulecar")
    account_services.user_follow(follower=carol.user, followee=alice.user)
    other, _ = services.conversation_get_or_create_direct(user=alice.user, other=carol.user)
    client_id = uuid.uuid4()
    _send(alice.phones[0], conversation.pk, [alice, bob], client_id=client_id)
    body, _ = envelope(
        sender=alice.phones[0], conversation_id=other.pk, recipients=[alice, carol],
        client_id=client_id,
    )  # fmt: skip
    refused = _refusal(alice.phones[0], other.pk, body)
    assert (refused.code, refused.field) == ("client_id_reused", "client_id")
    assert not Message.objects.filter(conversation=other).exists()


def test_a_revoked_sending_device_is_refused_before_anything_else(pair) -> None:
    alice, bob, conversation = pair
    phone = alice.phones[1]
    client_id = uuid.uuid4()
    body, _ = envelope(
        sender=phone, conversation_id=conversation.pk, recipients=[alice, bob], client_id=client_id
    )
    _send_body(phone, conversation.pk, body)
    account_services.device_revoke(user=alice.user, device_id=phone.device.pk)
    # Even the retry of a stored message, and into a conversation that does not exist.
    for conversation_id in (conversation.pk, uuid.uuid4()):
        refused = _refusal(phone, conversation_id, body)
        assert (refused.code, refused.field) == ("unknown_device", "sender_device")


def test_a_retry_returns_the_stored_message_even_after_a_block(pair) -> None:
    """A lost answer is retried with the same client_id; what was stored before the
    block stays the answer, and nothing new is stored."""
    alice, bob, conversation = pair
    body, _ = envelope(sender=alice.phones[0], conversation_id=conversation.pk,
                       recipients=[alice, bob])  # fmt: skip
    stored, _ = _send_body(alice.phones[0], conversation.pk, body)
    account_services.user_block(blocker=bob.user, blocked=alice.user)
    again, created = _send_body(alice.phones[0], conversation.pk, body)
    assert (again.pk, created) == (stored.pk, False)
    assert _refusal(alice.phones[0], conversation.pk, envelope(
        sender=alice.phones[0], conversation_id=conversation.pk, recipients=[alice, bob]
    )[0]).code == "blocked"  # fmt: skip
    assert Message.objects.count() == 1


def test_no_such_conversation_and_a_former_member_are_the_same_404(pair) -> None:
    alice, bob, _ = pair
    group = services.conversation_create_group(creator=bob.user, name="Rules", members=[alice.user])
    body, _ = envelope(sender=alice.phones[0], conversation_id=group.pk,
                       recipients=[alice, bob])  # fmt: skip
    refused = _refusal(alice.phones[0], uuid.uuid4(), body)
    assert (refused.code, refused.field) == ("conversation_not_found", "conversation_id")
    services.conversation_leave(user=alice.user, conversation=group)
    refused = _refusal(alice.phones[0], group.pk, body)
    assert (refused.code, refused.field) == ("conversation_not_found", "conversation_id")
    assert not Message.objects.exists()


def test_the_request_must_be_accepted_before_replying() -> None:
    alice, dan = person("rulereq"), person("ruledan")
    conversation, _ = services.conversation_get_or_create_direct(user=alice.user, other=dan.user)
    assert Membership.objects.get(user=dan.user).state == Membership.State.REQUESTED
    body, _ = envelope(sender=dan.phones[0], conversation_id=conversation.pk,
                       recipients=[alice, dan])  # fmt: skip
    assert _refusal(dan.phones[0], conversation.pk, body).code == "request_not_accepted"
    services.request_accept(user=dan.user, conversation=conversation)
    _, created = _send_body(dan.phones[0], conversation.pk, body)
    assert created


def test_history_keys_must_name_exactly_the_members_who_have_one(pair) -> None:
    alice, bob, conversation = pair
    body, _ = envelope(sender=alice.phones[0], conversation_id=conversation.pk,
                       recipients=[alice, bob])  # fmt: skip
    assert set(body["history_keys"]) == {str(alice.user.pk), str(bob.user.pk)}
    missing = dict(body["history_keys"])
    missing.pop(str(bob.user.pk))
    refused = _refusal(alice.phones[0], conversation.pk, {**body, "history_keys": missing})
    assert refused.code == "recipients_changed"
    assert refused.extra["missing_history_keys"] == [str(bob.user.pk)]
    stranger = str(uuid.uuid4())
    extra = {**body["history_keys"], stranger: body["history_keys"][str(bob.user.pk)]}
    refused = _refusal(alice.phones[0], conversation.pk, {**body, "history_keys": extra})
    assert refused.extra["extra_history_keys"] == [stranger]
    assert refused.extra["missing"] == [] and refused.extra["extra"] == []
    assert not Message.objects.exists()


def test_a_revoked_member_device_must_be_left_out(pair) -> None:
    alice, bob, conversation = pair
    body, _ = envelope(sender=alice.phones[0], conversation_id=conversation.pk,
                       recipients=[alice, bob])  # fmt: skip
    revoked = alice.phones[1].device.pk
    account_services.device_revoke(user=alice.user, device_id=revoked)
    refused = _refusal(alice.phones[0], conversation.pk, body)
    assert refused.extra["extra"] == [str(revoked)]
    _, created = _send(alice.phones[0], conversation.pk, [alice, bob])
    assert created
