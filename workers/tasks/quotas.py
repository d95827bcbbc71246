from __future__ import annotations

from celery import shared_task

from apps.quotas.services import starter_grants_ended


@shared_task(ignore_result=True)
def starter_grants_end() -> int:
    """Tell the teams whose starter grant ended (each once); their quota already counts as 0 for growth."""
    return starter_grants_ended()
