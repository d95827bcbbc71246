"""The Celery app: ``celery -A controlplane worker`` and ``celery -A controlplane beat``."""

import logging.config
import os
import sys

from celery import Celery
from celery.signals import setup_logging, task_postrun, task_prerun, worker_init, worker_process_init, worker_ready

from . import heap
from .broker import register as register_embedded_broker

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
register_embedded_broker()  # sqlite:// broker URLs: the embedded broker for make run and small installs

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])


@app.on_after_finalize.connect
def _beat_schedule(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.conf.beat_schedule = {
        "reconcile-all-clusters": {
            "task": "workers.tasks.sync.reconcile_all",
            "schedule": float(settings.RECONCILE_INTERVAL_S),
        },
        "scrape-metrics": {"task": "workers.tasks.metrics.scrape_all", "schedule": float(settings.SCRAPE_INTERVAL_S)},
        "rollup-metrics": {"task": "workers.tasks.metrics.rollup_and_retention", "schedule": 60.0},
        "evaluate-alerts": {
            "task": "workers.tasks.alerts.evaluate_alerts",
            "schedule": float(settings.ALERT_INTERVAL_S),
        },
        "housekeeping": {"task": "workers.tasks.housekeeping.prune", "schedule": 3600.0},
        "weekly-waste-reports": {"task": "workers.tasks.alerts.weekly_waste_reports", "schedule": 3600.0},
        "starter-grants-end": {"task": "workers.tasks.quotas.starter_grants_end", "schedule": 300.0},
        "compaction-policy": {
            "task": "workers.tasks.compaction.compaction_policy_all",
            "schedule": float(settings.COMPACTION_INTERVAL_S),
        },
    }


@setup_logging.connect
def _django_logging(**_: object) -> None:
    """Worker and beat log as the web does (JSON lines in production, with an id per request or task), instead of
    Celery's own root-logger setup."""
    _configure_logging()


def _configure_logging() -> None:

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    logging.captureWarnings(True)  # warnings (Celery's start-up ones too) become log lines


if len(sys.argv) > 1 and os.path.basename(sys.argv[0]) == "celery":
    _configure_logging()  # before the worker starts, so even its first warnings are JSON lines


@task_prerun.connect
def _task_request_id(task_id: str | None = None, **_: object) -> None:
    from apps.core.middleware import set_request_id

    set_request_id(f"task-{(task_id or '')[:12]}")  # log lines and audit events of a task carry its id


@task_postrun.connect
def _count_task(task: object = None, state: str | None = None, **_: object) -> None:
    from apps.core.observability import TASKS

    TASKS.labels(getattr(task, "name", "?").rsplit(".", 1)[-1], (state or "unknown").lower()).inc()


@worker_init.connect
def _worker_metrics_endpoint(**_: object) -> None:
    """Where a worker shares no metrics directory with the web (separate pods), it serves its own /metrics."""
    port = os.environ.get("WORKER_METRICS_PORT")
    if port:
        from prometheus_client import start_http_server

        from apps.core.observability import exposition_registry

        start_http_server(int(port), registry=exposition_registry(with_database=False))


@worker_ready.connect
@worker_process_init.connect
def _settle_heap(**_: object) -> None:
    """The loaded application is left out of every later collection (controlplane/heap.py): in the worker once it
    is ready (the solo and threads pools run tasks there), and in each prefork pool process after it started."""
    heap.settle()
