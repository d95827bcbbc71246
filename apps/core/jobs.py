"""Enqueue background work by task name, so that no app imports the task modules that import it.

Tasks (``workers/tasks``) call services; services ask for work by name through here. The broker being down never
fails the caller's write: the failure is logged and beat's reconcile does the work later.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

log = logging.getLogger(__name__)


@cache
def _registry() -> Any:
    from celery import current_app

    current_app.loader.import_default_modules()  # the web process imports the task modules only when asked
    return current_app.tasks


def task(name: str) -> Any:
    """The registered Celery task called ``name`` (e.g. ``workers.tasks.sync.sync_cluster``)."""
    return _registry()[name]


def enqueue(name: str, *args: Any) -> bool:
    """Send ``name(*args)`` to the broker; False (logged) when the broker refuses it."""
    try:
        task(name).delay(*args)
        return True
    except Exception:  # noqa: BLE001 - broker down: the caller's write is saved, the reconcile catches up
        log.warning("could not enqueue %s%r", name, args, exc_info=True)
        return False
