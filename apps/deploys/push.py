"""The push: the merged config to Ray, once per generation, under the cluster's lock; a refused app held back."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster, SyncRun
from apps.core.observability import PUSH_SECONDS, PUSHES
from apps.servespec import spec
from workers.clients.ray_dashboard import RayRejected, RayUnavailable

from . import isolation
from .config import build_serve_config
from .inventory import _mark_unreachable, take_inventory
from .locks import acquire_lock, release_lock
from .models import PushState
from .transport import transport_for

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    outcome: str  # pushed | skipped | locked | failed: the last round's
    runs: list[int]
    settled: bool = True
    pushed: bool = False  # some round put a new config on Ray (a later round may have found nothing new)


def push_cluster(cluster_id: int, *, trigger: str = "write", force: bool = False, attempt: int = 0) -> PushResult:
    """Push the newest desired config if this worker can take the cluster's lock.

    Raises RayUnavailable for transient failures (the task retries with backoff). Pushes repeat while
    writes keep arriving, so a burst of writes ends in few pushes and none is lost.
    """
    runs: list[int] = []
    outcome = "locked"
    pushed = False
    while True:
        owner = acquire_lock(cluster_id=cluster_id, owner=uuid.uuid4().hex)
        if owner is None:
            return PushResult(outcome, runs, pushed=pushed)
        # Holding the lock, no other push runs: a run still marked running was left by a worker that died.
        SyncRun.objects.filter(cluster_id=cluster_id, state=SyncRun.State.RUNNING).update(
            state=SyncRun.State.FAILED,
            finished_at=timezone.now(),
            error="abandoned: the worker running this push stopped before it finished; its lock expired",
            error_kind=SyncRun.ErrorKind.ABANDONED,
        )
        try:
            while True:
                cluster = Cluster.objects.select_related("push_state").get(pk=cluster_id)
                generation = cluster.desired_generation
                outcome = _push_once(cluster, generation, trigger=trigger, force=force, attempt=attempt, runs=runs)
                pushed = pushed or outcome == "pushed"
                force = False
                if Cluster.objects.filter(pk=cluster_id, desired_generation=generation).exists():
                    break
                _until_writes_pause(cluster_id)  # a burst is still arriving: one more push for all of it
        finally:
            release_lock(cluster_id=cluster_id, owner=owner)
        # A write that came in after our last check found the lock taken and left the push to us.
        if not Cluster.objects.filter(pk=cluster_id, desired_generation__gt=generation).exists():
            return PushResult(outcome, runs, pushed=pushed)


def _until_writes_pause(cluster_id: int) -> None:
    """Writes kept arriving during the last push: wait (holding the lock) until none came for PUSH_COALESCE_S, at
    most PUSH_COALESCE_MAX_S, so that a burst of 200 writes from 50 teams ends in a few pushes, not one per push's
    duration. A lone write never waits: its push is the first round."""
    quiet, limit = settings.PUSH_COALESCE_S, settings.PUSH_COALESCE_MAX_S
    if quiet <= 0:
        return
    deadline = time.monotonic() + limit
    seen = Cluster.objects.filter(pk=cluster_id).values_list("desired_generation", flat=True).first()
    while time.monotonic() < deadline:
        time.sleep(min(quiet, max(0.0, deadline - time.monotonic())))
        now = Cluster.objects.filter(pk=cluster_id).values_list("desired_generation", flat=True).first()
        if now == seen:
            return
        seen = now


def _push_once(cluster: Cluster, generation: int, *, trigger: str, force: bool, attempt: int, runs: list[int]) -> str:
    if cluster.inventory_taken_at is None:
        # Never push to a cluster before recording what already runs on it: the first PUT would delete it all.
        try:
            take_inventory(cluster)
        except RayUnavailable as exc:
            now = timezone.now()
            run = SyncRun.objects.create(
                cluster=cluster,
                trigger=trigger,
                state=SyncRun.State.FAILED,
                generation=generation,
                attempt=attempt,
                error=f"Not pushed: the apps already on the cluster could not be read first ({exc})",
                error_kind=SyncRun.ErrorKind.UNREACHABLE,
                started_at=now,
                finished_at=now,
            )
            runs.append(run.pk)
            _mark_unreachable(cluster, exc)
            raise
        cluster.refresh_from_db()
    merged = build_serve_config(cluster)
    now = timezone.now()
    run = SyncRun.objects.create(
        cluster=cluster,
        trigger=trigger,
        state=SyncRun.State.RUNNING,
        generation=generation,
        attempt=attempt,
        config_hash=merged.hash,
        config_snapshot=merged.config,
        app_count=len(merged.config["applications"]),
        started_at=now,
    )
    runs.append(run.pk)
    try:
        spec.validate_deploy_config(merged.config)
    except Exception as exc:  # pydantic ValidationError or dropped keys: the config itself is wrong
        faults = isolation.culprits_from_message(str(exc), merged)
        _finish(
            run, SyncRun.State.FAILED, f"The merged config failed Ray's ServeDeploySchema: {exc}", "invalid", faults
        )
        _observe_push(cluster, "invalid", run)
        PushState.objects.filter(pk=cluster.pk).update(pushed_generation=generation, last_failed_hash=merged.hash)
        if faults:
            isolation.hold_back(cluster=cluster, faults=faults, source="the merged config failed Ray's schema")
            return "isolated"
        return "failed"
    if not force and merged.hash == cluster.push_state.last_pushed_hash:
        _finish(run, SyncRun.State.SKIPPED, "")
        _observe_push(cluster, "skipped", run)
        PushState.objects.filter(pk=cluster.pk).update(pushed_generation=generation)
        _after_push(cluster, merged.revisions)
        return "skipped"
    try:
        transport_for(cluster).put_config(merged.config)
    except RayUnavailable as exc:
        _finish(run, SyncRun.State.FAILED, str(exc), SyncRun.ErrorKind.UNREACHABLE)
        _observe_push(cluster, "unreachable", run)
        _mark_unreachable(cluster, exc)
        raise
    except RayRejected as exc:
        faults = _isolate(cluster, merged, exc)
        _finish(run, SyncRun.State.FAILED, str(exc), SyncRun.ErrorKind.REFUSED, faults)
        _observe_push(cluster, "refused", run)
        PushState.objects.filter(pk=cluster.pk).update(pushed_generation=generation, last_failed_hash=merged.hash)
        if faults:
            isolation.hold_back(cluster=cluster, faults=faults, source="Ray refused the merged config")
            return "isolated"  # a new generation: the lock holder pushes everyone else at once
        return "failed"
    _finish(run, SyncRun.State.SUCCEEDED, "")
    _observe_push(cluster, "succeeded", run)
    PushState.objects.filter(pk=cluster.pk).update(
        pushed_generation=generation, last_pushed_hash=merged.hash, last_failed_hash=""
    )
    Cluster.objects.filter(pk=cluster.pk).update(
        health=Cluster.Health.HEALTHY,
        health_message="",
        last_seen_at=timezone.now(),
        drift=[],
    )
    _after_push(cluster, merged.revisions)
    return "pushed"


def _observe_push(cluster: Cluster, outcome: str, run: SyncRun) -> None:

    PUSHES.labels(cluster.name, outcome).inc()
    if run.started_at and run.finished_at:
        PUSH_SECONDS.labels(cluster.name).observe((run.finished_at - run.started_at).total_seconds())


def _finish(run: SyncRun, state: str, error: str, error_kind: str = "", faults: dict | None = None) -> None:
    run.state = state
    run.error = error
    run.error_kind = error_kind
    run.faults = faults or {}
    run.finished_at = timezone.now()
    run.save(update_fields=["state", "error", "error_kind", "faults", "finished_at"])


def _isolate(cluster: Cluster, merged: Any, exc: RayRejected) -> dict[str, str]:
    """The apps at fault in a refused merged config: named by Ray's answer, or found by bisecting what this push
    changes (apps.deploys.isolation)."""
    faults = isolation.culprits_from_message(exc.message, merged)
    faults = {n: r for n, r in faults.items() if n not in merged.held_back}
    if faults:
        return faults
    suspects = sorted(merged.accepted)
    if not suspects:
        return {}
    try:
        culprit, trials = isolation.bisect(transport_for(cluster).put_config, merged, suspects)
    except RayUnavailable:
        return {}  # Ray stopped answering mid-trial: the retry pushes again and tries again
    log.info("cluster %s: bisected %d changed apps in %d trials: %s", cluster.name, len(suspects), trials, culprit)
    return {culprit: isolation._reason(exc.message)} if culprit else {}


def _after_push(cluster: Cluster, revisions: dict[int, int]) -> None:
    """Mark what Ray now has as deployed, and forget deleted apps that the config no longer carries."""
    with transaction.atomic():
        apps = list(Application.objects.filter(pk__in=list(revisions)).only("id", "deployed_revision_id", "state"))
        changed = []
        for app in apps:
            rev = revisions[app.pk]
            if app.deployed_revision_id != rev:
                app.deployed_revision_id = rev
                app.state = Application.State.DEPLOYING
                changed.append(app)
        Application.objects.bulk_update(changed, ["deployed_revision", "state"], batch_size=500)
        gone = Application.objects.filter(cluster=cluster, deleted_at__isnull=False).exclude(pk__in=list(revisions))
        for app in gone.select_related("team"):
            audit_record(
                actor="system (push)",
                team=app.team,
                action="application.removed",
                obj=app,
                source="task",
                before={"name": app.name, "cluster": cluster.name},
            )
        gone.delete()
