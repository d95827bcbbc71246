"""The Celery app: ``celery -A controlplane worker`` and ``celery -A controlplane beat``."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

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
        "compaction-policy": {
            "task": "workers.tasks.compaction.compaction_policy_all",
            "schedule": float(settings.COMPACTION_INTERVAL_S),
        },
    }
