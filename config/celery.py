"""The Celery app. In the embedded default tasks run in-process (eager)."""

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("parley")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _publish_from_own_loop(**kwargs: Any) -> None:
    """A worker runs no event loop: publishing to sockets gets one of its own."""
    from realtime.publish import publish_from_own_loop

    publish_from_own_loop()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task: Any = None, **kwargs: Any) -> None:
    """As Django does before and after each request: close a connection that broke or
    outlived CONN_MAX_AGE, keep the others (CELERY_DB_REUSE_MAX in settings). Not for
    a task run eagerly, inside its caller's request or transaction."""
    if task is None or getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
