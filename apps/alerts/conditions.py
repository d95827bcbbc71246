"""What is wrong now: one function per kind of rule, each a fixed number of queries however many subjects.

A condition is a subject (an app, a team's pool, a cluster, a plan) for which a rule's test holds now; the
engine (``services.evaluate``) turns conditions into incidents. Thresholds come from each subject's own rule
(``Rules.for_subject``), so a team's or an app's override changes only its own verdict.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Max, Min, OuterRef, Subquery, Sum

from apps.applications.models import Application
from apps.clusters.models import Cluster, SyncRun
from apps.compaction.models import CompactionPlan
from apps.metrics import prom
from apps.metrics.models import Point, ScrapeRun, Series
from apps.metrics.selectors import residency
from apps.quotas.models import AdmissionRefusal
from apps.quotas.selectors import usage_for
from apps.quotas.services import fmt

from .kinds import KINDS, effective_params
from .models import AlertRule
from .thrash import suggest_slots


@dataclass
class Condition:
    kind: str
    key: str
    summary: str
    rule: AlertRule
    team_id: int | None = None
    application_id: int | None = None
    cluster_id: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return KINDS[self.kind].severity


class Rules:
    """Every rule, loaded once, and the one that applies to a subject: application > team (on the cluster, then
    anywhere) > cluster > default."""

    def __init__(self, rules: list[AlertRule]) -> None:
        # An application's rule also names the application's team (so the team's readers see it): keyed by app.
        self.by_scope: dict[tuple, AlertRule] = {
            (r.kind, r.application_id, None, None) if r.application_id else (r.kind, None, r.team_id, r.cluster_id): r
            for r in rules
        }
        self.kinds = {r.kind for r in rules}

    def for_subject(
        self, kind: str, *, application: int | None = None, team: int | None = None, cluster: int | None = None
    ) -> AlertRule | None:
        for scope in (
            (kind, application, None, None) if application else None,
            (kind, None, team, cluster) if team and cluster else None,
            (kind, None, team, None) if team else None,
            (kind, None, None, cluster) if cluster else None,
            (kind, None, None, None),
        ):
            if scope is not None and scope in self.by_scope:
                rule = self.by_scope[scope]
                return rule if rule.enabled else None
        return None

    def params(self, rule: AlertRule) -> dict[str, float]:
        return effective_params(rule.kind, rule.params)


def _app_rule(rules: Rules, kind: str, app: Application) -> AlertRule | None:
    return rules.for_subject(kind, application=app.pk, team=app.team_id, cluster=app.cluster_id)


def _live_apps() -> Any:
    return Application.objects.filter(deleted_at__isnull=True).select_related("team", "cluster")


# ---- applications ------------------------------------------------------------------------------------------------


def app_failed(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for app in _live_apps().filter(state__in=[Application.State.DEPLOY_FAILED, Application.State.UNHEALTHY]):
        rule = _app_rule(rules, "app_failed", app)
        if rule is None:
            continue
        deployments = {
            name: {"status": d.get("status"), "message": (d.get("message") or "")[:500]}
            for name, d in (app.status.get("deployments") or {}).items()
        }
        label = app.get_state_display().upper().replace(" ", "_")
        out.append(
            Condition(
                "app_failed",
                f"app_failed:app:{app.pk}",
                f"{app.team.slug}/{app.name} is {label} on {app.cluster.name}",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {
                    "state": app.state,
                    "ray_status": app.status.get("status"),
                    "message": (app.status_message or "")[-1500:],
                    "deployments": deployments,
                },
            )
        )
    return out


def crash_loop(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for app in _live_apps().exclude(replica_starts=[]):
        rule = _app_rule(rules, "crash_loop", app)
        if rule is None:
            continue
        p = rules.params(rule)
        since = now.timestamp() - p["window_s"]
        recent = [s for s in app.replica_starts if s.get("t", 0) >= since]
        if len(recent) < p["starts"]:
            continue
        per_dep: dict[str, int] = defaultdict(int)
        for s in recent:
            per_dep[s.get("deployment", "")] += 1
        worst = max(per_dep, key=per_dep.get)
        out.append(
            Condition(
                "crash_loop",
                f"crash_loop:app:{app.pk}",
                f"{app.team.slug}/{app.name}: Ray started {len(recent)} replicas of {worst} in "
                f"{p['window_s'] / 60:g} min without a config change (crash loop)",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {"starts": recent[-20:], "per_deployment": dict(per_dep), "window_s": p["window_s"]},
            )
        )
    return out


# ---- clusters ----------------------------------------------------------------------------------------------------


def push_failed(rules: Rules, now: datetime) -> list[Condition]:
    last = SyncRun.objects.filter(cluster=OuterRef("pk")).exclude(state=SyncRun.State.RUNNING).order_by("-id")
    clusters = Cluster.objects.annotate(
        last_state=Subquery(last.values("state")[:1]), last_error=Subquery(last.values("error")[:1])
    ).filter(last_state=SyncRun.State.FAILED)
    out = []
    for c in clusters:
        rule = rules.for_subject("push_failed", cluster=c.pk)
        if rule is not None:
            out.append(
                Condition(
                    "push_failed",
                    f"push_failed:cluster:{c.pk}",
                    f"The last push of {c.name}'s Serve config failed",
                    rule,
                    cluster_id=c.pk,
                    evidence={"error": (c.last_error or "")[:2000]},
                )
            )
    return out


def cluster_unreachable(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for c in Cluster.objects.filter(health=Cluster.Health.UNREACHABLE):
        rule = rules.for_subject("cluster_unreachable", cluster=c.pk)
        if rule is None:
            continue
        since = c.last_seen_at or c.created_at
        if (now - since).total_seconds() < rules.params(rule)["for_s"]:
            continue
        out.append(
            Condition(
                "cluster_unreachable",
                f"cluster_unreachable:cluster:{c.pk}",
                f"{c.name} has not answered since {since:%Y-%m-%d %H:%M} UTC",
                rule,
                cluster_id=c.pk,
                evidence={"health_message": c.health_message[:1000], "last_seen_at": since.isoformat()},
            )
        )
    return out


def drift(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    for c in Cluster.objects.exclude(drift=[]):
        rule = rules.for_subject("drift", cluster=c.pk)
        if rule is not None:
            apps = ", ".join(d.get("app", "") for d in c.drift[:5])
            out.append(
                Condition(
                    "drift",
                    f"drift:cluster:{c.pk}",
                    f"{c.name} runs something other than its stored configs ({apps})",
                    rule,
                    cluster_id=c.pk,
                    evidence={"drift": c.drift[:20], "policy": c.drift_policy},
                )
            )
    return out


# ---- quotas ------------------------------------------------------------------------------------------------------


def quota_high(rules: Rules, now: datetime) -> list[Condition]:
    pairs = set(Application.objects.filter(deleted_at__isnull=True).values_list("team_id", "cluster_id").distinct())
    names = dict(Cluster.objects.filter(pk__in={c for _, c in pairs}).values_list("pk", "name"))
    out = []
    for (team_id, cluster_id), rows in usage_for(pairs).items():
        rule = rules.for_subject("quota_high", team=team_id, cluster=cluster_id)
        if rule is None:
            continue
        share = Decimal(str(rules.params(rule)["percent"])) / 100
        for u in rows:
            if u.quota is None or u.quota <= 0 or u.in_use <= share * u.quota:
                continue
            pct = float(u.in_use / u.quota * 100)
            out.append(
                Condition(
                    "quota_high",
                    f"quota_high:team:{team_id}:cluster:{cluster_id}:{u.pool}:{u.resource}",
                    f"{pct:.0f}% of the {u.resource} quota in {u.pool} on {names.get(cluster_id)} is allocated "
                    f"({fmt(u.in_use)} of {fmt(u.quota)})",
                    rule,
                    team_id,
                    None,
                    cluster_id,
                    {"pool": u.pool, "resource": u.resource, "in_use": fmt(u.in_use), "quota": fmt(u.quota)},
                )
            )
    return out


def admission_refused(rules: Rules, now: datetime) -> list[Condition]:
    longest = max(
        [
            effective_params("admission_refused", r.params)["window_s"]
            for r in rules.by_scope.values()
            if r.kind == "admission_refused"
        ]
        or [3600]
    )
    latest: dict[tuple[int, int], list[AdmissionRefusal]] = defaultdict(list)
    for r in AdmissionRefusal.objects.filter(at__gte=now - timedelta(seconds=longest)).select_related("cluster"):
        latest[(r.team_id, r.cluster_id)].append(r)
    out = []
    for (team_id, cluster_id), refusals in latest.items():
        rule = rules.for_subject("admission_refused", team=team_id, cluster=cluster_id)
        if rule is None:
            continue
        window = rules.params(rule)["window_s"]
        recent = [r for r in refusals if (now - r.at).total_seconds() <= window]
        if not recent:
            continue
        out.append(
            Condition(
                "admission_refused",
                f"admission_refused:team:{team_id}:cluster:{cluster_id}",
                f"{len(recent)} write(s) refused by quota admission on {recent[0].cluster.name}: "
                f"{(recent[0].reasons or ['over quota'])[0]}"[:300],
                rule,
                team_id,
                None,
                cluster_id,
                {
                    "refusals": [
                        {"at": r.at.isoformat(), "by": r.actor_label, "reasons": r.reasons} for r in recent[:10]
                    ]
                },
            )
        )
    return out


# ---- metrics: idle GPUs and cache thrash ----------------------------------------------------------------------


def app_gpus(app: Application) -> float:
    """GPUs Ray reports allocated to the app now: its running replicas times each one's GPUs."""
    total = 0.0
    for dep in (app.status.get("deployments") or {}).values():
        per = float((dep.get("required_resources") or {}).get("GPU") or 0)
        total += per * sum(1 for r in dep.get("replicas") or [] if r.get("state") == "RUNNING")
    return total


def idle_gpu(rules: Rules, now: datetime) -> list[Condition]:
    candidates = []
    for app in _live_apps().filter(state=Application.State.RUNNING):
        gpus = app_gpus(app)
        rule = _app_rule(rules, "idle_gpu", app) if gpus > 0 else None
        if rule is None:
            continue
        p = rules.params(rule)
        deployed = app.status.get("last_deployed_time_s") or 0
        if now.timestamp() - float(deployed) < p["window_s"]:
            continue  # not running long enough to be idle for a whole window
        candidates.append((app, gpus, rule, p))
    if not candidates:
        return []
    longest = max(p["window_s"] for *_, p in candidates)
    start = now - timedelta(seconds=longest)
    cluster_ids = {a.cluster_id for a, *_ in candidates}
    # Metrics cover an app's window only if the cluster was scraped from its start.
    scraped = _scrape_coverage(cluster_ids, start, now)
    series = list(
        Series.objects.filter(
            cluster_id__in=cluster_ids, name__in=["ray_serve_num_http_requests", "ray_serve_deployment_request_counter"]
        ).values("pk", "cluster_id", "name", "labels")
    )
    by_app: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for s in series:
        by_app[(s["cluster_id"], s["labels"].get("application", ""))].append(s)
    families = ["ray_serve_num_http_requests", "ray_serve_deployment_request_counter"]
    sums = _per_window(families, cluster_ids, {p["window_s"] for *_, p in candidates}, now)
    remote = _remote_sums(
        {(a.cluster, p["window_s"]) for a, *_, p in candidates if _is_remote(a.cluster)},
        [prom.HTTP_REQUESTS, prom.HANDLE_REQUESTS],
        ("application",),
        now,
    )
    out = []
    for app, gpus, rule, p in candidates:
        window_start = now - timedelta(seconds=p["window_s"])
        per_family: dict[str, float] = defaultdict(float)
        if _is_remote(app.cluster):
            got = remote.get((app.cluster_id, p["window_s"]))
            if got is None or got.covered is None or got.covered > window_start + timedelta(seconds=120):
                continue  # the query endpoint did not answer, or has not the whole window: no verdict
            for family, values in got.sums.items():
                per_family[family] = values.get((app.serve_name,), 0.0)
        else:
            covered = scraped.get(app.cluster_id)
            if covered is None or covered > window_start + timedelta(seconds=60):
                continue  # no metrics for the whole window: no verdict
            for s in by_app.get((app.cluster_id, app.serve_name), []):
                per_family[s["name"]] += sums[p["window_s"]].get(s["pk"], 0.0)
        # Requests through HTTP and through handles (composition): the larger of the two counts.
        requests = max(per_family.values(), default=0.0)
        if requests > p["max_requests"]:
            continue
        out.append(
            Condition(
                "idle_gpu",
                f"idle_gpu:app:{app.pk}",
                f"{app.team.slug}/{app.name} holds {gpus:g} GPU(s) and served {requests:g} requests in "
                f"{_duration(p['window_s'])}: {gpus * 24:g} GPU-hours a day idle",
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {
                    "gpus": gpus,
                    "requests": requests,
                    "window_s": p["window_s"],
                    "gpu_hours_per_day": round(gpus * 24, 2),
                },
            )
        )
    return out


def _is_remote(cluster: Cluster) -> bool:
    return cluster.metrics_source == Cluster.MetricsSource.PROMETHEUS


@dataclass
class _RemoteWindow:
    covered: datetime | None
    sums: dict[str, dict[tuple[str, ...], float]]


def _remote_sums(
    asks: set[tuple[Cluster, float]], families: list[str], by: tuple[str, ...], now: datetime, how: str = "increase"
) -> dict[tuple[int, float], _RemoteWindow | None]:
    """For clusters read through Prometheus: per (cluster, window), each family's sums by label group, and since
    when the window is covered. One query per family, cluster and distinct window; None where it did not answer."""
    out: dict[tuple[int, float], _RemoteWindow | None] = {}
    for cluster, w in asks:
        try:
            out[(cluster.pk, w)] = _RemoteWindow(
                prom.covered_since(cluster, w, now),
                {f: prom.window_sums(cluster, f, w, now, by, how) for f in families},
            )
        except prom.SourceUnavailable:
            out[(cluster.pk, w)] = None
    return out


def _scrape_coverage(cluster_ids: set[int], start: datetime, now: datetime) -> dict[int, datetime]:
    """Per cluster still scraped (a scrape in the last 5 minutes): its earliest successful scrape since a little
    before start. Absent: no metrics to judge by."""
    rows = (
        ScrapeRun.objects.filter(cluster_id__in=cluster_ids, finished_at__isnull=False, samples__gt=0)
        .filter(started_at__gte=start - timedelta(minutes=5))
        .values("cluster_id")
        .annotate(first=Min("started_at"), last=Max("started_at"))
    )
    return {r["cluster_id"]: r["first"] for r in rows if r["last"] >= now - timedelta(minutes=5)}


def _per_window(
    names: list[str], cluster_ids: set[int], windows: set[float], now: datetime, agg: Any = Sum
) -> dict[float, dict[int, float]]:
    """For each distinct window: series id -> aggregate of its points in it. One query per distinct window (rules
    share a handful), never one per app or per series."""
    out = {}
    for w in windows:
        start = now - timedelta(seconds=w)
        resolution = Point.RAW if w <= 20 * 3600 else Point.MINUTE
        rows = (
            Point.objects.filter(
                series__cluster_id__in=cluster_ids, series__name__in=names, resolution=resolution, ts__gte=start
            )
            .values("series_id")
            .annotate(v=agg("value"))
        )
        out[w] = {r["series_id"]: r["v"] for r in rows}
    return out


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass
class _Cache:
    """One multiplexed deployment's counters over a window, from either metric source."""

    requests: float = 0.0
    loads: float = 0.0
    slots: float = 0.0  # the most models one replica held
    replicas: set = field(default_factory=set)
    models: set = field(default_factory=set)  # distinct model ids resident on some replica in the window


def _cache_embedded(
    apps: dict[str, Application], rules_by_app: dict, rules: Rules, cluster_ids: set[int], now: datetime
) -> dict[tuple[str, str], _Cache]:
    families = [
        "ray_serve_multiplexed_get_model_requests_counter",
        "ray_serve_multiplexed_models_load_counter",
    ]
    gauges = ["ray_serve_num_multiplexed_models", "ray_serve_registered_multiplexed_model_id"]
    if not cluster_ids:
        return {}
    series = list(
        Series.objects.filter(cluster_id__in=cluster_ids, name__in=[*families, *gauges]).values(
            "pk", "cluster_id", "name", "labels"
        )
    )
    windows = {rules.params(r)["window_s"] for r in rules_by_app.values()}
    sums = _per_window(families, cluster_ids, windows, now)
    peaks = _per_window(gauges, cluster_ids, windows, now, Max)
    out: dict[tuple[str, str], _Cache] = defaultdict(_Cache)
    for s in series:
        app_name = s["labels"].get("application", "")
        app = apps.get(app_name)
        if app_name not in rules_by_app or app.cluster_id != s["cluster_id"] or _is_remote(app.cluster):
            continue
        w = rules.params(rules_by_app[app_name])["window_s"]
        c = out[(app_name, s["labels"].get("deployment", ""))]
        if s["name"] == families[0]:
            c.requests += sums[w].get(s["pk"], 0.0)
        elif s["name"] == families[1]:
            c.loads += sums[w].get(s["pk"], 0.0)
        elif s["pk"] in peaks[w]:
            if s["name"] == gauges[0]:
                c.slots = max(c.slots, peaks[w][s["pk"]])
                c.replicas.add(s["labels"].get("replica"))
            elif s["labels"].get("model_id") is not None:
                c.models.add(s["labels"]["model_id"])
    return out


def _cache_remote(
    apps: dict[str, Application], rules_by_app: dict, rules: Rules, now: datetime
) -> dict[tuple[str, str], _Cache]:
    asks = {
        (apps[n].cluster, rules.params(r)["window_s"]) for n, r in rules_by_app.items() if _is_remote(apps[n].cluster)
    }
    if not asks:
        return {}
    by = ("application", "deployment")
    counted = _remote_sums(asks, [prom.MUX_REQUESTS, prom.MUX_LOADS], by, now)
    held = _remote_sums(asks, [prom.MUX_RESIDENT], (*by, "replica"), now, how="max")
    ids = _remote_sums(asks, [prom.MUX_MODEL_ID], (*by, "model_id"), now, how="max")
    out: dict[tuple[str, str], _Cache] = defaultdict(_Cache)
    for name, rule in rules_by_app.items():
        app = apps[name]
        key = (app.cluster_id, rules.params(rule)["window_s"])
        if not _is_remote(app.cluster) or counted.get(key) is None:
            continue  # embedded, or its query endpoint did not answer: no verdict
        for family, values in counted[key].sums.items():
            for (a, dep), v in values.items():
                if a == name:
                    c = out[(a, dep)]
                    c.requests, c.loads = (
                        (c.requests + v, c.loads) if family == prom.MUX_REQUESTS else (c.requests, c.loads + v)
                    )
        for (a, dep, replica), v in (
            (held.get(key) or _RemoteWindow(None, {})).sums.get(prom.MUX_RESIDENT) or {}
        ).items():
            if a == name:
                out[(a, dep)].slots = max(out[(a, dep)].slots, v)
                out[(a, dep)].replicas.add(replica)
        for (a, dep, model_id), _v in (
            (ids.get(key) or _RemoteWindow(None, {})).sums.get(prom.MUX_MODEL_ID) or {}
        ).items():
            if a == name:
                out[(a, dep)].models.add(model_id)
    return out


def cache_thrash(rules: Rules, now: datetime) -> list[Condition]:
    apps = {a.serve_name: a for a in _live_apps().exclude(state=Application.State.PENDING)}
    if not apps:
        return []
    rules_by_app = {name: _app_rule(rules, "cache_thrash", a) for name, a in apps.items()}
    rules_by_app = {k: v for k, v in rules_by_app.items() if v is not None}
    if not rules_by_app:
        return []
    cluster_ids = {apps[n].cluster_id for n in rules_by_app}
    local_ids = {apps[n].cluster_id for n in rules_by_app if not _is_remote(apps[n].cluster)}
    groups = {
        **_cache_embedded(apps, rules_by_app, rules, local_ids, now),
        **_cache_remote(apps, rules_by_app, rules, now),
    }
    resident_rows: list[dict] | None = None  # read once, and only when something thrashes
    out = []
    for (app_name, deployment), c in sorted(groups.items()):
        app, rule = apps[app_name], rules_by_app[app_name]
        p = rules.params(rule)
        w = p["window_s"]
        requests, loads = c.requests, c.loads
        if requests <= 0:
            continue
        hit_rate = max(0.0, 1 - loads / requests)
        loads_per_min = loads / (w / 60)
        if hit_rate >= p["max_hit_rate"] or loads_per_min <= p["min_loads_per_min"]:
            continue
        # Slots per replica: the most models a replica held at once (under thrash its cache is full).
        slots = c.slots
        n_replicas = max(1, len(c.replicas))
        models = set(c.models)
        models.discard(None)
        if resident_rows is None:
            resident_rows = residency(list(Cluster.objects.filter(pk__in=cluster_ids)))
        now_resident = [
            {"replica": r.get("replica", ""), "model_id": r.get("model_id", ""), "since": r.get("resident_since")}
            for r in resident_rows
            if r.get("application") == app_name and r.get("deployment") == deployment
        ]
        suggestion = suggest_slots(
            requests=requests,
            loads=loads,
            distinct_models=max(len(models), int(slots) + 1),
            replicas=n_replicas,
            slots=int(slots) or 1,
            target=p["target_hit_rate"],
        )
        out.append(
            Condition(
                "cache_thrash",
                f"cache_thrash:app:{app.pk}:{deployment}",
                f"{app.team.slug}/{app.name} {deployment}: model cache hit rate {hit_rate:.0%} with "
                f"{loads_per_min:.1f} loads/min; {suggestion['text']}"[:300],
                rule,
                app.team_id,
                app.pk,
                app.cluster_id,
                {
                    "deployment": deployment,
                    "requests": requests,
                    "loads": loads,
                    "hit_rate": round(hit_rate, 4),
                    "loads_per_min": round(loads_per_min, 3),
                    "window_s": p["window_s"],
                    "slots_per_replica": int(slots),
                    "replicas": n_replicas,
                    "distinct_models": len(models),
                    "resident": now_resident[:50],
                    "suggestion": suggestion,
                },
            )
        )
    return out


# ---- compaction --------------------------------------------------------------------------------------------------


def compaction_waiting(rules: Rules, now: datetime) -> list[Condition]:
    out = []
    plans = CompactionPlan.objects.filter(state=CompactionPlan.State.PLANNED, gpus_freed__gt=0).select_related(
        "cluster"
    )
    for plan in plans:
        rule = rules.for_subject("compaction_waiting", cluster=plan.cluster_id)
        if rule is None:
            continue
        waited = (now - plan.created_at).total_seconds()
        if waited < rules.params(rule)["wait_s"] or not plan.nodes_to_drain:
            continue
        out.append(
            Condition(
                "compaction_waiting",
                f"compaction_waiting:plan:{plan.pk}",
                f"Compaction plan #{plan.pk} on {plan.cluster.name} would free {len(plan.nodes_to_drain)} node(s) "
                f"({fmt(plan.gpus_freed)} GPUs) and has waited {_duration(math.floor(waited))}",
                rule,
                cluster_id=plan.cluster_id,
                evidence={
                    "plan": plan.pk,
                    "nodes_to_drain": plan.nodes_to_drain,
                    "gpu_hours_per_day": str(plan.gpu_hours_per_day),
                },
            )
        )
    return out


EVALUATORS = {
    "app_failed": app_failed,
    "crash_loop": crash_loop,
    "push_failed": push_failed,
    "cluster_unreachable": cluster_unreachable,
    "drift": drift,
    "quota_high": quota_high,
    "admission_refused": admission_refused,
    "idle_gpu": idle_gpu,
    "cache_thrash": cache_thrash,
    "compaction_waiting": compaction_waiting,
}
