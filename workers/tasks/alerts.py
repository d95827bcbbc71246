from __future__ import annotations

import logging
import uuid

from celery import shared_task
from django.core.cache import cache

log = logging.getLogger(__name__)

EVALUATE_LOCK = "alerts:evaluate"


@shared_task(acks_late=False, time_limit=600, soft_time_limit=570)
def evaluate_alerts() -> dict:
    """One evaluation at a time: a pass still running when beat fires again makes the next a no-op.

    The same task then enqueues every delivery whose retry is due (or whose broker message was lost): one beat
    entry, so an idle installation runs two alert tasks a minute, not eight.
    """
    from apps.alerts.services import evaluate

    token = uuid.uuid4().hex
    if not cache.add(EVALUATE_LOCK, token, timeout=600):
        return {"skipped": "another evaluation is running"}
    try:
        result = vars(evaluate())
        result["deliveries_enqueued"] = deliver_due()
        return result
    finally:
        if cache.get(EVALUATE_LOCK) == token:
            cache.delete(EVALUATE_LOCK)


@shared_task(acks_late=False, time_limit=120, soft_time_limit=110)
def deliver(delivery_id: int) -> str:
    from apps.alerts.services import deliver as deliver_one

    return deliver_one(delivery_id)


def deliver_due() -> int:
    """Enqueue every delivery whose attempt is due (each its own task: a slow endpoint blocks no other)."""
    from apps.alerts.services import due_deliveries
    from apps.core.jobs import enqueue

    due = due_deliveries()
    for pk in due:
        enqueue("workers.tasks.alerts.deliver", pk)
    return len(due)


@shared_task(time_limit=1800)
def weekly_waste_reports() -> int:
    from apps.alerts.waste import send_weekly_reports

    return send_weekly_reports()
