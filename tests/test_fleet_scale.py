"""A fleet's size: the push history and the audit log stay bounded, pruned a batch at a time (nothing young or
still shown is touched), and a burst of writes ends in few pushes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.services import prune_audit_events
from apps.clusters.models import SyncRun
from apps.clusters.services import prune_sync_runs
from workers.tasks.housekeeping import prune

pytestmark = pytest.mark.django_db


def runs(cluster, n: int, start, step=timedelta(hours=1)) -> list[SyncRun]:
    return SyncRun.objects.bulk_create(
        SyncRun(cluster=cluster, created_at=start + i * step, config_snapshot={"applications": [{"name": f"a{i}"}]})
        for i in range(n)
    )


def test_old_runs_go_and_only_each_clusters_latest_keep_their_config(make_cluster, settings):
    settings.SYNC_RUN_RETENTION_DAYS, settings.SYNC_RUN_SNAPSHOTS_KEPT = 90, 5
    now = timezone.now()
    one, two = make_cluster(name="one"), make_cluster(name="two")
    runs(one, 4, now - timedelta(days=120))  # past the retention: deleted
    kept = runs(one, 12, now - timedelta(days=2))
    few = runs(two, 3, now - timedelta(days=1))  # fewer than five: every one keeps its config
    with CaptureQueriesContext(connection) as ctx:
        out = prune_sync_runs(now=now, batch=3)
    assert out == {"deleted": 4, "snapshots_cleared": 7}
    assert SyncRun.objects.filter(cluster=one).count() == 12
    with_config = SyncRun.objects.filter(cluster=one).exclude(config_snapshot={}).order_by("created_at")
    assert [r.pk for r in with_config] == [r.pk for r in kept[-5:]]  # the five newest
    assert SyncRun.objects.filter(cluster=two).exclude(config_snapshot={}).count() == len(few)
    deletes = [q for q in ctx.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 2  # 4 rows in batches of 3
    assert prune_sync_runs(now=now, batch=3) == {"deleted": 0, "snapshots_cleared": 0}  # idempotent


def test_the_audit_log_keeps_its_retention_and_zero_keeps_everything(settings, make_cluster):
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(actor_label="t", action="x", object_type="y", at=now - timedelta(days=d)) for d in (1, 300, 401, 800)
    )
    settings.AUDIT_RETENTION_DAYS = 0
    assert prune_audit_events(now=now) == 0 and AuditEvent.objects.count() == 4
    settings.AUDIT_RETENTION_DAYS = 400
    assert prune_audit_events(now=now, batch=1) == 2
    assert sorted((now - e.at).days for e in AuditEvent.objects.all()) == [1, 300]


def test_the_hourly_task_prunes_both(settings, make_cluster):
    settings.SYNC_RUN_RETENTION_DAYS, settings.AUDIT_RETENTION_DAYS = 1, 1
    old = timezone.now() - timedelta(days=3)
    runs(make_cluster(name="c"), 2, old)
    AuditEvent.objects.create(actor_label="t", action="x", object_type="y", at=old)
    out = prune()
    assert out["sync_runs"]["deleted"] == 2 and out["audit_events"] == 1
    from controlplane.celery import app

    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    assert (
        schedule["housekeeping"]["task"] == "workers.tasks.housekeeping.prune"
        and "workers.tasks.housekeeping.prune" in app.tasks
    )


def test_a_push_round_waits_for_a_burst_of_writes_to_pause_but_no_longer_than_its_limit(
    make_cluster, settings, monkeypatch
):
    """Writes that arrive during a push are pushed together once they pause (PUSH_COALESCE_S), or when
    PUSH_COALESCE_MAX_S has passed while they keep coming; with the pause off, at once."""
    from django.db.models import F

    from apps.clusters.models import Cluster
    from apps.deploys import push

    cluster = make_cluster(name="burst")
    clock, sleeps = [0.0], []

    def writes_during(n: int):
        def sleep(s: float) -> None:
            sleeps.append(s)
            clock[0] += s
            if len(sleeps) <= n:  # a write landed while we waited
                Cluster.objects.filter(pk=cluster.pk).update(desired_generation=F("desired_generation") + 1)

        return sleep

    monkeypatch.setattr(push.time, "monotonic", lambda: clock[0])
    settings.PUSH_COALESCE_S, settings.PUSH_COALESCE_MAX_S = 0.5, 2.0
    monkeypatch.setattr(push.time, "sleep", writes_during(2))
    push._until_writes_pause(cluster.pk)
    assert sleeps == [0.5, 0.5, 0.5]  # two writes seen, then a quiet half second
    sleeps.clear()
    clock[0] = 0.0
    monkeypatch.setattr(push.time, "sleep", writes_during(100))
    push._until_writes_pause(cluster.pk)
    assert sum(sleeps) == 2.0  # they kept coming: the limit
    sleeps.clear()
    settings.PUSH_COALESCE_S = 0
    push._until_writes_pause(cluster.pk)
    assert sleeps == []
