"""The periodic tasks in the embedded default (docs/running.md, "Database, Redis, Celery").

Production runs Celery beat beside the workers. The embedded default has no beat, so
the server process runs ``CELERY_BEAT_SCHEDULE`` itself, each task at its interval,
on the server's event loop, as ``common.tasks.run_later`` runs countdowns (events
published from there reach the in-memory channel layer safely).
"""

import asyncio
import importlib
import importlib.util
import logging
from typing import Any

from celery import Task
from channels.db import database_sync_to_async
from django.apps import apps
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
            and settings.SCHEDULE_IN_PROCESS
            and settings.TASK_TIMERS_IN_PROCESS
        ):
            self.started = True
            self._keep(asyncio.create_task(self._start(), name="schedule"))
        await self.app(scope, receive, send)

    async def _start(self) -> None:
        for name, task, seconds in await asyncio.to_thread(_scheduled_tasks):
            self._keep(asyncio.create_task(_every(task, seconds), name=name))

    def _keep(self, run: "asyncio.Task[None]") -> None:
        run.add_done_callback(_stopped)
        self._runs.append(run)


def _scheduled_tasks() -> list[tuple[str, Task[Any, Any], float]]:
    """The schedule's tasks, their apps' task modules imported (as a worker does at
    start; Celery's own way would set Django up again and run its checks)."""
    from config.celery import app

    for config in apps.get_app_configs():
        module = f"{config.name}.tasks"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return [
        (name, app.tasks[entry["task"]], float(entry["schedule"]))
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items()
    ]


async def _every(task: Task[Any, Any], seconds: float) -> None:
    run = database_sync_to_async(task.apply, thread_sensitive=False)
    while True:
        await asyncio.sleep(seconds)
        try:
            await run()
        except Exception:
            # The next run tries again, as beat's would; tasks take ids, never content.
            logger.exception("periodic task %s failed", task.name)


def _stopped(run: "asyncio.Task[None]") -> None:
    """A schedule stops only with its loop, or when its tasks cannot be found: say so."""
    if not run.cancelled() and run.exception() is not None:
        logger.error("periodic schedule %s stopped", run.get_name(), exc_info=run.exception())
