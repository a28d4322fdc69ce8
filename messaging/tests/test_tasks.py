"""Disappearing messages are erased by the periodic task, on schedule, unasked: on
`make test-services` by a real Celery beat scheduling it on a real worker process; on
the embedded default by the server process itself (common.periodic), which has no
beat."""

import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from accounts import services as account_services
from common.testing import (
    ROOT,
    SERVICES_MODE,
    LiveServer,
    stop_process,
    subprocess_env,
    wait_until,
)
from messaging import services
from messaging.models import Message
from messaging.serializers import EnvelopeSerializer
from messaging.tests.support import envelope, person


@pytest.mark.django_db(transaction=True)
def test_due_messages_are_erased_by_the_periodic_task(
    tmp_path: Path, start_daphne: Callable[..., LiveServer]
) -> None:
    alice, bob = person("alice"), person("bob")
    account_services.user_follow(follower=bob.user, followee=alice.user)
    conversation, _ = services.conversation_get_or_create_direct(user=alice.user, other=bob.user)
    services.conversation_set_timer(actor=alice.user, conversation=conversation, seconds=30)
    for _ in range(2):
        body, _ = envelope(
            sender=alice.phones[0], conversation_id=conversation.pk, recipients=[alice, bob]
        )
        parsed = EnvelopeSerializer(data=body)
        assert parsed.is_valid()
        services.message_send(
            sender=alice.user, conversation_id=conversation.pk, envelope=parsed.to_envelope()
        )
    due, later = Message.objects.order_by("seq")
    Message.objects.filter(pk=due.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    def erased() -> bool:
        due.refresh_from_db()
        return due.deleted_at is not None

    if SERVICES_MODE:
        env = {**subprocess_env(), "ERASE_EXPIRED_EVERY_SECONDS": "0.5"}
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "beat", "--loglevel", "INFO",
             "-s", str(tmp_path / "beat-schedule")],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until(erased, timeout=60, message="beat and the worker erase the due message")
        finally:
            stop_process(beat)
    else:
        server = start_daphne({"SCHEDULE_IN_PROCESS": "1", "ERASE_EXPIRED_EVERY_SECONDS": "0.5"})
        try:
            wait_until(erased, timeout=15, message="the server process erases the due message")
        finally:
            stop_process(server.process)
    assert bytes(due.ciphertext) == b"" and due.keys == {} and due.history_keys == {}
    later.refresh_from_db()
    assert later.deleted_at is None and bytes(later.ciphertext) != b"", "not yet due"
