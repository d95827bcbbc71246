"""Quota admission: a write is admitted only if the team's demand in every pool stays within its quota."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.core.errors import Invalid, error_detail
from apps.core.links import public_url
from apps.servespec.demand import demand, replica_count, unplaceable
from apps.teams.models import Team
from apps.teams.selectors import admin_emails

from .models import AdmissionRefusal, Quota, QuotaRequest


@dataclass(frozen=True)
class PoolUsage:
    pool: str
    resource: str
    quota: Decimal | None
    in_use: Decimal  # demand of the team's other apps on the cluster
    requested: Decimal  # demand of the app being written
    previous: Decimal = Decimal(0)  # demand of the app before this write
    ended_at: Any = None  # a starter grant that has ended: its quota counts as 0 (growth refused, nothing torn down)

    @property
    def demand(self) -> Decimal:
        return self.in_use + self.requested

    @property
    def fits(self) -> bool:
        # Shrinking or keeping an app is always allowed, even over a lowered quota: only growth is refused.
        if self.requested <= self.previous:
            return True
        return self.quota is not None and self.demand <= self.quota


def fmt(value: Decimal | None) -> str:
    if value is None:
        return "none"
    text = format(value.normalize(), "f")
    return text


def team_pool_usage(
    *, team: Team, cluster: Cluster, spec: dict | None = None, exclude_app_id: int | None = None
) -> list[PoolUsage]:
    """Per pool (and per CPU quota where one is set): quota, what the team's other apps use, what spec asks."""
    quotas = {q.pool_id: q for q in Quota.objects.filter(team=team, cluster=cluster)}
    apps = list(  # the team's applications through the reverse relation: quotas sit below applications
        team.applications.filter(cluster=cluster, deleted_at__isnull=True, current_revision__isnull=False).values_list(
            "pk", "current_revision__spec"
        )
    )
    others = [s for pk, s in apps if pk != exclude_app_id]
    # A rollout's new version runs beside the app until the rollout is done: its surge is counted (apps.rollouts).
    others += list(
        team.applications.filter(
            cluster=cluster, deleted_at__isnull=True, rollouts__phase__in=["start", "split", "promote", "restore"]
        ).values_list("rollouts__to_revision__spec", flat=True)
    )
    previous_spec = next((s for pk, s in apps if pk == exclude_app_id), None)
    return pool_usage(cluster.pools.all(), quotas, others, spec=spec, previous_spec=previous_spec)


def pool_usage(
    pools: Iterable[Any],
    quotas: dict[int, Quota],
    specs: list[dict],
    *,
    spec: dict | None = None,
    previous_spec: dict | None = None,
) -> list[PoolUsage]:
    """Each pool's rows (its resource, and CPU where a CPU quota is set): the quota, what ``specs`` use, what ``spec``
    asks and what ``previous_spec`` used. ``quotas`` maps pool ids to the team's quotas."""
    out = []
    now = timezone.now()
    for pool in pools:
        quota = quotas.get(pool.pk)
        ended = quota is not None and quota.ended(now)
        rows = [(pool.resource, (Decimal(0) if ended else quota.gpus) if quota else None)]
        if quota is not None and quota.cpus is not None:
            rows.append(("CPU", Decimal(0) if ended else quota.cpus))
        for resource, limit in rows:
            out.append(
                PoolUsage(
                    pool=pool.name,
                    resource=resource,
                    quota=limit,
                    in_use=sum((demand(s, resource, pool.name) for s in specs), Decimal(0)),
                    requested=demand(spec, resource, pool.name) if spec else Decimal(0),
                    previous=demand(previous_spec, resource, pool.name) if previous_spec else Decimal(0),
                    ended_at=quota.expires_at if ended else None,
                )
            )
    return out


def check_admission(*, team: Team, cluster: Cluster, spec: dict, exclude_app_id: int | None = None) -> list[PoolUsage]:
    """Raise a 400 naming pool, demand, quota and use when the spec does not fit; return the usage otherwise.

    Callers hold the cluster's row lock, so two concurrent writes cannot together exceed a quota.
    """
    pools = list(cluster.pools.all())
    unplaced = unplaceable(spec, [(p.name, p.resource) for p in pools])
    if unplaced:
        raise ValidationError(unplaced)  # a resource no pool counts would run outside every quota
    check_caps(team=team, cluster=cluster, spec=spec, exclude_app_id=exclude_app_id)
    usage = team_pool_usage(team=team, cluster=cluster, spec=spec, exclude_app_id=exclude_app_id)
    refused = [u for u in usage if not u.fits]
    if refused:
        raise Invalid(
            {
                "quota": [
                    f"team {team.slug} needs {fmt(u.demand)} {u.resource} in {u.pool} on {cluster.name}, "
                    f"quota {fmt(u.quota) if u.quota is not None else 'none'}, in use {fmt(u.in_use)}"
                    + (
                        f" (the starter grant ended on {u.ended_at:%Y-%m-%d}: running apps keep running, growing "
                        "needs a quota request)"
                        if u.ended_at
                        else ""
                    )
                    for u in refused
                ],
                "quota_detail": [usage_json(u) for u in refused],
            }
        )
    return usage


def check_caps(*, team: Team, cluster: Cluster, spec: dict, exclude_app_id: int | None = None) -> None:
    """The cluster's caps per team: applications, and replicas as Ray would start them (one team cannot fill the
    shared scheduler and object store with free ``num_cpus: 0`` replicas). Shrinking is always allowed."""
    others = list(
        team.applications.filter(cluster=cluster, deleted_at__isnull=True, current_revision__isnull=False)
        .exclude(pk=exclude_app_id)
        .values_list("current_revision__spec", flat=True)
    )
    errors: dict[str, list[str]] = {}
    if exclude_app_id is None and len(others) + 1 > cluster.team_max_apps:
        errors["name"] = [
            f"Team {team.slug} runs {len(others)} applications on {cluster.name}, the most a team may "
            f"({cluster.team_max_apps}); delete one, or ask a platform admin to raise the cap."
        ]
    previous = None
    if exclude_app_id is not None:
        previous = team.applications.filter(pk=exclude_app_id).values_list("current_revision__spec", flat=True).first()
    asked = replica_count(spec)
    if asked > (replica_count(previous) if previous else 0):
        total = sum(replica_count(o) for o in others) + asked
        if total > cluster.team_max_replicas:
            errors["deployments"] = [
                f"Team {team.slug} would run {total} replicas on {cluster.name} (this app {asked}, counted as Ray "
                f"starts them: most replicas, gangs, surge); a team may run at most {cluster.team_max_replicas}."
            ]
    if errors:
        raise ValidationError(errors)


@contextmanager
def refusals_recorded(*, team: Team, cluster: Cluster, actor: Any, dry_run: bool = False) -> Iterator[None]:
    """Around a write's transaction: a quota refusal is kept (outside the rolled-back transaction) for alerts."""
    try:
        yield
    except ValidationError as exc:
        detail = error_detail(exc)
        detail = detail if isinstance(detail, dict) else {}
        if not dry_run and "quota_detail" in detail:
            AdmissionRefusal.objects.create(
                team=team,
                cluster=cluster,
                actor_label=str(getattr(actor, "username", "") or actor or "")[:150],
                reasons=[str(m) for m in detail.get("quota", [])][:10],
            )
        raise


def usage_json(u: PoolUsage) -> dict[str, Any]:
    return {
        "pool": u.pool,
        "resource": u.resource,
        "demand": fmt(u.demand),
        "requested": fmt(u.requested),
        "quota": None if u.quota is None else fmt(u.quota),
        "in_use": fmt(u.in_use),
    }


def quota_set(
    *,
    actor: Any,
    team: Team,
    cluster: Cluster,
    pool_name: str,
    gpus: Decimal | str | int,
    cpus: Decimal | str | int | None = None,
    source: str = "api",
) -> Quota:
    """Create or change a team's quota in a pool. Lowering it below use refuses growth, never tears down."""
    pool = cluster.pools.filter(name=pool_name).first()
    if pool is None:
        raise ValidationError({"pool": [f"Cluster {cluster.name} has no pool {pool_name!r}."]})
    gpus = Decimal(str(gpus))
    cpus = None if cpus is None else Decimal(str(cpus))
    if not gpus.is_finite() or gpus < 0 or (cpus is not None and (not cpus.is_finite() or cpus < 0)):
        raise ValidationError({"gpus": ["Must be a number, zero or more."]})
    with transaction.atomic():
        Cluster.objects.select_for_update().get(pk=cluster.pk)
        quota = Quota.objects.filter(team=team, pool=pool).first()
        before = (
            None
            if quota is None
            else {"gpus": fmt(quota.gpus), "cpus": fmt(quota.cpus) if quota.cpus is not None else None}
        )
        if quota is None:
            quota = Quota(team=team, cluster=cluster, pool=pool, gpus=gpus, cpus=cpus)
        else:
            quota.gpus, quota.cpus = gpus, cpus
        quota.starter, quota.expires_at, quota.ended_notified_at = False, None, None  # set by a person: no end
        quota.save()
        audit_record(
            actor=actor,
            team=team,
            action="quota.set",
            obj=quota,
            before=before,
            after={"pool": pool.name, "gpus": fmt(gpus), "cpus": None if cpus is None else fmt(cpus)},
            source=source,
        )
    return quota


def quota_request_create(
    *,
    actor: Any,
    team: Team,
    cluster: Cluster,
    pool_name: str,
    gpus: Decimal | str | int,
    cpus: Decimal | str | int | None = None,
    reason: str,
    source: str = "api",
) -> QuotaRequest:
    errors: dict[str, list[str]] = {}
    pool = cluster.pools.filter(name=pool_name).first() if isinstance(pool_name, str) else None
    if pool is None:
        errors["pool"] = [f"Cluster {cluster.name} has no pool {pool_name!r}."]
    try:
        amount = Decimal(str(gpus))
        if not amount.is_finite() or amount < 0 or amount > 100000:
            raise ValueError
    except (ArithmeticError, ValueError):
        errors["gpus"] = ["Must be a number from 0 to 100000, e.g. 4.5."]
    if not isinstance(reason, str) or not reason.strip():
        errors["reason"] = ["Say why the team needs it: platform admins decide on this."]
    elif len(reason) > 2000:
        errors["reason"] = ["At most 2000 characters."]
    if errors:
        raise ValidationError(errors)
    req = QuotaRequest.objects.create(
        team=team, cluster=cluster, pool=pool, gpus=amount, cpus=cpus, reason=reason.strip(), requested_by=actor
    )
    audit_record(
        actor=actor,
        team=team,
        action="quota_request.create",
        obj=req,
        after={"pool": pool.name, "gpus": fmt(amount), "reason": req.reason[:200]},
        source=source,
    )
    return req


def quota_request_decide(
    *, actor: Any, request: QuotaRequest, approve: bool, comment: str = "", source: str = "api"
) -> QuotaRequest:
    with transaction.atomic():
        req = QuotaRequest.objects.select_for_update().get(pk=request.pk)
        if req.state != QuotaRequest.State.PENDING:
            raise ValidationError({"state": [f"This request was already {req.state}."]})
        req.state = QuotaRequest.State.APPROVED if approve else QuotaRequest.State.REJECTED
        req.decided_by = actor
        req.decided_at = timezone.now()
        req.comment = (comment or "")[:2000]
        req.save()
        if approve:
            quota_set(
                actor=actor,
                team=req.team,
                cluster=req.cluster,
                pool_name=req.pool.name,
                gpus=req.gpus,
                cpus=req.cpus,
                source=source,
            )
        audit_record(
            actor=actor,
            team=req.team,
            action=f"quota_request.{req.state}",
            obj=req,
            before={"state": "pending"},
            after={"state": req.state, "gpus": fmt(req.gpus), "comment": req.comment},
            source=source,
        )
    return req


# ---- the starter grant ---------------------------------------------------------------------------------------------


def grant_starter(team: Team, now: Any = None) -> list[Quota]:
    """Give a new team every cluster's starter grant at once (a quota with a lifetime), so its first model runs with
    no human step. Called when the team is created (apps.quotas.signals), in the same transaction."""
    now = now or timezone.now()
    granted = []
    clusters = (
        Cluster.objects.filter(starter_grant__starter_gpus__gt=0)
        .exclude(starter_grant__starter_pool="")
        .select_related("starter_grant")
        .prefetch_related("pools")
    )
    for cluster in clusters:
        starter = cluster.starter_grant
        pool = next((p for p in cluster.pools.all() if p.name == starter.starter_pool), None)
        if pool is None or Quota.objects.filter(team=team, pool=pool).exists():
            continue
        ends = now + timedelta(days=starter.starter_days) if starter.starter_days else None
        quota = Quota.objects.create(
            team=team, cluster=cluster, pool=pool, gpus=starter.starter_gpus, starter=True, expires_at=ends
        )
        audit_record(
            actor=team.created_by,
            team=team,
            action="quota.starter_grant",
            obj=quota,
            after={"pool": pool.name, "gpus": fmt(quota.gpus), "ends": ends.isoformat() if ends else None},
            source="system",
        )
        granted.append(quota)
    return granted


def starter_grants_ended(now: Any = None) -> int:
    """Tell each team whose starter grant has ended, once: an audit event and a mail to its admins."""
    now = now or timezone.now()
    told = 0
    ended = Quota.objects.filter(starter=True, expires_at__lte=now, ended_notified_at__isnull=True)
    for quota in ended.select_related("team", "cluster", "pool"):
        with transaction.atomic():
            if not Quota.objects.filter(pk=quota.pk, ended_notified_at__isnull=True).update(ended_notified_at=now):
                continue  # told meanwhile by another worker
            audit_record(
                actor=None,
                team=quota.team,
                action="quota.starter_ended",
                obj=quota,
                after={"pool": quota.pool.name, "gpus": fmt(quota.gpus), "ended": quota.expires_at.isoformat()},
                source="system",
            )
        emails = admin_emails([quota.team_id])
        if emails:
            url = public_url(f"/teams/{quota.team.slug}/quota/")
            send_mail(
                f"[{quota.team.slug}] Your starter GPU grant on {quota.cluster.name} has ended",
                f"The starter grant of {fmt(quota.gpus)} GPU in pool {quota.pool.name} on {quota.cluster.name} ended "
                f"on {quota.expires_at:%Y-%m-%d %H:%M} UTC. Your running applications keep running; deploying more "
                f"or growing them needs a quota: ask for one at {url}",
                None,
                emails,
                fail_silently=True,
            )
        told += 1
    return told
