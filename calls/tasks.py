"""Background work of the calls app. Thin and idempotent: take ids, call services."""

import uuid

from celery import shared_task

from calls.services import call_ring_timeout, calls_close_stale
from common.tasks import run_later


@shared_task(name="calls.ring_timeout", acks_late=True, ignore_result=True)
def ring_timeout(call_id: str) -> bool:
    """A call still ringing at its deadline becomes missed (runs once per invite,
    scheduled for the deadline; any run before or after it is harmless)."""
    return call_ring_timeout(call_id=uuid.UUID(call_id))


@shared_task(name="calls.close_stale_calls", acks_late=True, ignore_result=True)
def close_stale_calls() -> int:
    """Periodic (beat): missed calls the timeout did not store, dead active calls."""
    return calls_close_stale()


def schedule_ring_timeout(call_id: uuid.UUID, seconds: float) -> None:
    """Run ``ring_timeout`` at the deadline, in either run mode."""
    run_later(ring_timeout, (str(call_id),), seconds)
