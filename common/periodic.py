"""The periodic tasks in the embedded default (docs/running.md, "Database, Redis, Celery").

Production runs Celery beat beside the workers. The embedded default has no beat, so
the server process runs ``CELERY_BEAT_SCHEDULE`` itself, each task at its interval,
on the server's event loop, as ``common.tasks.run_later`` runs countdowns (events
published from there reach the in-memory channel layer safely).
"""

import asyncio
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


class InProcessSchedule:
    """ASGI middleware that starts the schedule on the server's loop with the first
    connection (Daphne has no startup hook); with a broker, beat does it, and this
    passes every connection straight through."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.started = False
        self._runs: list[asyncio.Task[None]] = []  # held: the loop keeps weak references

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        # Read per connection: the test process turns timers off per test.
        if (
            not self.started
            and settings.CELERY_TASK_ALWAYS_EAGER
            and settings.TASK_TIMERS_IN_PROCESS
        ):
            self.started = True
            for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
                run = asyncio.create_task(
                    _every(entry["task"], float(entry["schedule"])), name=name
                )
                run.add_done_callback(_stopped)
                self._runs.append(run)
        await self.app(scope, receive, send)


async def _every(task_name: str, seconds: float) -> None:
    from config.celery import app

    app.loader.import_default_modules()  # each app's tasks module, as a worker does at start
    task = app.tasks[task_name]
    run = database_sync_to_async(task.apply, thread_sensitive=False)
    while True:
        await asyncio.sleep(seconds)
        try:
            await run()
        except Exception:
            # The next run tries again, as beat's would; tasks take ids, never content.
            logger.exception("periodic task %s failed", task_name)


def _stopped(run: "asyncio.Task[None]") -> None:
    """A schedule stops only with its loop, or when its task cannot be found: say so."""
    if not run.cancelled() and run.exception() is not None:
        logger.error("periodic schedule %s stopped", run.get_name(), exc_info=run.exception())
