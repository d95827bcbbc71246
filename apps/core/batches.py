"""Deleting and rewriting many rows without one long statement: a batch at a time, each its own short transaction,
so scrapes, pushes and the web tier write between batches (on SQLite the writer lock is the whole database)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet

BATCH = 5000


def delete_in_batches(qs: QuerySet, batch: int = BATCH, order: str = "pk") -> int:
    """Delete what ``qs`` selects, ``batch`` rows per transaction, oldest first. Returns the rows deleted."""
    model = qs.model
    removed = 0
    while True:
        ids = list(qs.order_by(order).values_list("pk", flat=True)[:batch])
        if not ids:
            return removed
        with transaction.atomic():
            removed += model.objects.filter(pk__in=ids).delete()[1].get(model._meta.label, 0)
        if len(ids) < batch:
            return removed


def update_in_batches(qs: QuerySet, values: dict[str, Any], batch: int = BATCH) -> int:
    """``qs.update(**values)``, ``batch`` rows per transaction. ``qs`` must stop selecting a row once it is updated
    (e.g. it excludes ``values``), or this would not end. Returns the rows updated."""
    model = qs.model
    done = 0
    while True:
        ids = list(qs.order_by("pk").values_list("pk", flat=True)[:batch])
        if not ids:
            return done
        with transaction.atomic():
            done += model.objects.filter(pk__in=ids).update(**values)
        if len(ids) < batch:
            return done
