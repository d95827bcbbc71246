"""A tiny Celery app on the embedded broker, for the broker soak test (tests/test_broker.py).

Its one task records that it ran, in a SQLite file of its own, so the test can count runs per task.
"""

from __future__ import annotations

import os
import sqlite3
import threading

from celery import Celery

from controlplane.broker import register

register()
app = Celery("soak", broker=os.environ.get("SOAK_BROKER", "sqlite:////tmp/soak-broker.sqlite3"))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"polling_interval": 0.02},
    broker_connection_retry_on_startup=True,
    task_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)
_local = threading.local()


def _db() -> sqlite3.Connection:
    db = getattr(_local, "db", None)
    if db is None:
        db = _local.db = sqlite3.connect(os.environ["SOAK_RESULTS"], timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS runs (n INTEGER NOT NULL, pid INTEGER NOT NULL)")
    return db


@app.task(name="soak.record")
def record(n: int) -> None:
    _db().execute("INSERT INTO runs (n, pid) VALUES (?, ?)", (n, os.getpid()))
