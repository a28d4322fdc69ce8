"""Background work of the messaging app."""

from celery import shared_task

from messaging.services import messages_erase_expired


@shared_task(name="messaging.erase_expired_messages", acks_late=True, ignore_result=True)
def erase_expired_messages() -> int:
    """Erase disappearing messages that are due (run every few seconds by beat).
    Idempotent: erased messages are skipped; a batch left over is taken next run."""
    total = 0
    while (erased := messages_erase_expired()) > 0:
        total += erased
    return total
