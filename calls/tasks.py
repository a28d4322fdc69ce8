"""Background work of the calls app. Thin and idempotent: take ids, call services."""

import contextvars
import threading
import uuid

from asgiref.sync import SyncToAsync
from celery import shared_task
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection

from calls.services import call_ring_timeout, calls_close_stale


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
    """Run ``ring_timeout`` at the deadline: through the broker with a countdown. In the
    embedded default (eager Celery, which would run it at once) the server process
    runs it itself, on its event loop when there is one: events published from there
    reach the in-memory channel layer safely, which a bare thread's would not."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        ring_timeout.apply_async((str(call_id),), countdown=seconds)
        return
    if not settings.CALL_TIMERS_IN_PROCESS:
        return
    args = (str(call_id),)
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():

        def start() -> None:
            # A fresh context and its own worker thread: this request's context would
            # tie it to an executor that is busy with (or done with) the request.
            run = database_sync_to_async(ring_timeout.apply, thread_sensitive=False)
            loop.create_task(run(args), context=contextvars.Context())

        loop.call_soon_threadsafe(
            loop.call_later, seconds + 0.2, start, context=contextvars.Context()
        )
        return

    def run() -> None:
        try:
            ring_timeout.apply(args)
        finally:
            connection.close()  # this thread's own connection

    timer = threading.Timer(seconds + 0.2, run)
    timer.daemon = True
    timer.start()
