"""Calls between test people (messaging.tests.support) and boxes of opaque bytes: the
server never opens what it relays, so any well-formed box will do here."""

import secrets
import uuid
from datetime import timedelta

from django.utils import timezone

from accounts import services as account_services
from calls import services
from calls.models import Call
from common.encoding import b64u_encode
from messaging.tests.support import Person, person


def boxed(size: int = 200) -> str:
    return b64u_encode(secrets.token_bytes(size))


def offers_for(callee: Person) -> dict[str, str]:
    return {str(phone.device.pk): boxed() for phone in callee.phones}


def friends(*handles: str, phones: int = 1) -> list[Person]:
    """People who all follow each other: calls need no relay between them."""
    people = [person(handle, phones=phones, history_key=False) for handle in handles]
    for one in people:
        for other in people:
            if one is not other:
                account_services.user_follow(follower=one.user, followee=other.user)
    return people


def invite(caller: Person, callee: Person, *, call_id: uuid.UUID | None = None) -> Call:
    return services.call_invite(
        caller=caller.user, caller_device_id=caller.phones[0].device.pk,
        call_id=call_id or uuid.uuid4(), callee_handle=callee.user.handle, media="audio",
        offers=offers_for(callee),
    )  # fmt: skip


def make_call(caller: Person, callee: Person, state: str, **fields: object) -> Call:
    """A call stored straight in ``state``, as the table tests need."""
    now = timezone.now()
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "caller": caller.user,
        "callee": callee.user,
        "caller_device": caller.phones[0].device,
        "media": "audio",
        "state": state,
        "ring_deadline": now + timedelta(seconds=60),
    }
    if state == Call.State.ACTIVE:
        values.update(callee_device=callee.phones[0].device, answered_at=now)
    values.update(fields)
    return Call.objects.create(**values)
