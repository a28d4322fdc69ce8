"""Running a Celery task later, in both run modes (docs/running.md, "Database, Redis, Celery")."""

import contextvars
import threading
from typing import Any

from asgiref.sync import SyncToAsync
from celery import Task
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection


def run_later(task: Task, args: tuple[Any, ...], seconds: float) -> None:
    """Run ``task(*args)`` in ``seconds``: through the broker with a countdown. In the
    embedded default (eager Celery, which would run it at once) the server process
    runs it itself, on its event loop when there is one: events published from there
    reach the in-memory channel layer safely, which a bare thread's would not.
    ``TASK_TIMERS_IN_PROCESS`` off (the test process) drops such timers."""
    if not settings.CELERY_TASK_ALWAYS_EAGER:
        task.apply_async(args, countdown=seconds)
        return
    if not settings.TASK_TIMERS_IN_PROCESS:
        return
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and loop.is_running():

        def start() -> None:
            # A fresh context and its own worker thread: this request's context would
            # tie it to an executor that is busy with (or done with) the request.
            run = database_sync_to_async(task.apply, thread_sensitive=False)
            loop.create_task(run(args), context=contextvars.Context())

        loop.call_soon_threadsafe(
            loop.call_later, seconds + 0.2, start, context=contextvars.Context()
        )
        return

    def run() -> None:
        try:
            task.apply(args)
        finally:
            connection.close()  # this thread's own connection

    timer = threading.Timer(seconds + 0.2, run)
    timer.daemon = True
    timer.start()
