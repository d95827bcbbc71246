"""Conditions read from Ray's series (through apps.metrics.sources): idle GPUs, model caches that thrash."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.metrics.sources import (
    HANDLE_REQUESTS,
    HTTP_REQUESTS,
    MUX_LOADS,
    MUX_MODEL_ID,
    MUX_REQUESTS,
    MUX_RESIDENT,
    GpuUse,
    app_gpu_use,
    residency,
    sources_for,
)
from apps.rollouts.placement import serving_names

from ..thrash import suggest_slots
from .base import Condition, Rules, _app_rule, _duration, _live_apps


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
    readers = sources_for({a.cluster for a, *_ in candidates})
    families = [HTTP_REQUESTS, HANDLE_REQUESTS]
    out = []
    used: dict[float, dict] = {}  # window -> (cluster, application) -> real use, where Ray reads the GPUs
    for app, gpus, rule, p in candidates:
        window_start = now - timedelta(seconds=p["window_s"])
        if p["window_s"] not in used:
            used[p["window_s"]] = app_gpu_use(list({a.cluster_id for a, *_ in candidates}), p["window_s"], now)
        real = used[p["window_s"]].get((app.cluster_id, app.serve_name))
        if real is not None:
            # Real GPUs: what the app's processes did on them decides, whatever traffic it had.
            if real.covers(window_start) and real.utilization <= p["max_utilization"]:
                out.append(_idle_on_utilisation(app, gpus, rule, p, real))
            continue
        got = readers[app.cluster_id].window(app.cluster, families, p["window_s"], ("application",), now)
        if got is None or not got.covers(window_start):
            continue  # no metrics for the whole window (or the source did not answer): no verdict
        # The app's own replicas and, during a rollout, its new version's answer its requests.
        serving = serving_names(app.serve_name)
        per_family = {family: sum(values.get((n,), 0.0) for n in serving) for family, values in got.sums.items()}
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


def _idle_on_utilisation(app: Application, gpus: float, rule: Any, p: dict, real: GpuUse) -> Condition:
    return Condition(
        "idle_gpu",
        f"idle_gpu:app:{app.pk}",
        f"{app.team.slug}/{app.name} holds {gpus:g} GPU(s) ({real.memory_mib / 1024:.1f} GiB of GPU memory) and "
        f"used {real.utilization:.1f}% of one GPU on average over {_duration(p['window_s'])}: "
        f"{gpus * 24:g} GPU-hours a day idle",
        rule,
        app.team_id,
        app.pk,
        app.cluster_id,
        {
            "gpus": gpus,
            "method": "utilisation (NVML, per process)",
            "utilization": round(real.utilization, 2),
            "memory_mib": round(real.memory_mib, 1),
            "samples": real.samples,
            "window_s": p["window_s"],
            "gpu_hours_per_day": round(gpus * 24, 2),
        },
    )


@dataclass
class _Cache:
    """One multiplexed deployment's counters over a window, from either metric source."""

    requests: float = 0.0
    loads: float = 0.0
    slots: float = 0.0  # the most models one replica held
    replicas: set = field(default_factory=set)
    models: set = field(default_factory=set)  # distinct model ids resident on some replica in the window


def _caches(apps: dict[str, Application], rules_by_app: dict, rules: Rules, now: datetime) -> dict[tuple, _Cache]:
    """Each multiplexed deployment's counters over its rule's window, from its cluster's source (none where the
    source did not answer: no verdict)."""
    readers = sources_for({apps[n].cluster for n in rules_by_app})
    by = ("application", "deployment")
    # A rolling app's new version (its own Serve app) is the same deployment's cache, counted under the app.
    mine = {side: name for name in rules_by_app for side in serving_names(name)}
    out: dict[tuple[str, str], _Cache] = defaultdict(_Cache)
    for name, rule in rules_by_app.items():
        app = apps[name]
        reader, w = readers[app.cluster_id], rules.params(rule)["window_s"]
        counted = reader.window(app.cluster, [MUX_REQUESTS, MUX_LOADS], w, by, now)
        if counted is None:
            continue
        held = reader.window(app.cluster, [MUX_RESIDENT], w, (*by, "replica"), now, how="max")
        ids = reader.window(app.cluster, [MUX_MODEL_ID], w, (*by, "model_id"), now, how="max")
        for family, values in counted.sums.items():
            for (a, dep), v in values.items():
                if mine.get(a) == name:
                    c = out[(name, dep)]
                    if family == MUX_REQUESTS:
                        c.requests += v
                    else:
                        c.loads += v
        for (a, dep, replica), v in ((held.sums if held else {}).get(MUX_RESIDENT) or {}).items():
            if mine.get(a) == name:
                out[(name, dep)].slots = max(out[(name, dep)].slots, v)
                out[(name, dep)].replicas.add((a, replica))
        for (a, dep, model_id), _v in ((ids.sums if ids else {}).get(MUX_MODEL_ID) or {}).items():
            if mine.get(a) == name:
                out[(name, dep)].models.add(model_id)
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
    groups = _caches(apps, rules_by_app, rules, now)
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
            if r.get("application") in serving_names(app_name) and r.get("deployment") == deployment
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
