"""Security e-mails go out through Celery: in-process on the embedded default, through a
real worker process on `make test-services`."""

import pytest
from django.core import mail

from accounts.models import SecurityEvent
from accounts.tasks import send_security_event_email
from accounts.tests.factories import give_identity, make_device, make_user
from common.testing import SERVICES_MODE, wait_until


@pytest.mark.django_db(transaction=True)
def test_new_device_sends_one_security_email_after_commit() -> None:
    alice = make_user("alice")
    _, keys = make_device(alice, give_identity(alice))
    event = SecurityEvent.objects.get(user=alice, kind="device_added")

    def emailed() -> bool:
        event.refresh_from_db()
        return event.emailed_at is not None

    wait_until(emailed, timeout=30, message="the worker marks the event as e-mailed")
    if not SERVICES_MODE:
        assert len(mail.outbox) == 1
        message = mail.outbox[0]
        assert message.to == ["alice@example.com"]
        assert "A new device" in message.body
        assert "Test phone" in message.body
        assert str(keys.device_id) not in message.body
    # A retry of the same task sends nothing twice.
    first_sent = event.emailed_at
    send_security_event_email.apply(args=(event.pk,))
    event.refresh_from_db()
    assert event.emailed_at == first_sent
    if not SERVICES_MODE:
        assert len(mail.outbox) == 1


@pytest.mark.django_db
def test_task_for_a_deleted_event_does_nothing() -> None:
    send_security_event_email.apply(args=(987654,))
    assert mail.outbox == []
