"""Hourly housekeeping: the push history and the audit log pruned in bounded batches."""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def prune() -> dict:
    from apps.audit.services import prune_audit_events
    from apps.clusters.services import prune_sync_runs

    return {"sync_runs": prune_sync_runs(), "audit_events": prune_audit_events()}
