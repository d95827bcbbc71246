from __future__ import annotations

from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from apps.clusters.models import Cluster
from apps.compaction import services
from apps.compaction.models import CompactionPlan
from apps.core.errors import error_text
from apps.teams.principal import principal_of

from .common import gpu_fill, team_colours


def _staff(request: HttpRequest) -> None:
    if not principal_of(request).is_staff:
        raise Http404


def _node_map(plan: CompactionPlan, where: dict[str, list[dict]]) -> list[dict]:
    """The plan's nodes as cards: the replicas ``where`` puts on each, GPU use split by team in the cluster page's
    colours, whether the plan drains it."""
    drain = set(plan.nodes_to_drain)
    colours = _colours(plan)
    out = []
    for n in plan.input.get("nodes", []):
        here = [
            dict(r, team=r.get("team") or "", colour=colours.get(r.get("team") or "")) for r in where.get(n["id"], [])
        ]
        gpus = Decimal(str(n["resources"].get("GPU", 0)))
        used = sum((Decimal(str(r["resources"].get("GPU", 0))) for r in here), Decimal(0))
        out.append(
            {
                "id": n["id"],
                "head": n.get("head"),
                "draining": n["id"] in drain,
                "replicas": here,
                "gpus": format(gpus.normalize(), "f"),
                "used": format(used.normalize(), "f"),
                "gpu_fill": gpu_fill(here, gpus, colours),
            }
        )
    return sorted(out, key=lambda n: (not n["head"], n["id"]))


def _colours(plan: CompactionPlan) -> dict[str, str]:
    return team_colours({r.get("team") or "" for r in plan.input.get("replicas", [])})


def _maps(plan: CompactionPlan) -> tuple[list[dict], list[dict], list[dict]]:
    reps = {r["id"]: r for r in plan.input.get("replicas", [])}
    moved = {m["replica"]: m["to"] for m in plan.moves}
    cards = {m["replica"]: m["card"] for m in plan.moves if "card" in m}

    def build(after: bool) -> list[dict]:
        where: dict[str, list[dict]] = {}
        for r in reps.values():
            node = moved.get(r["id"], r["node"]) if after else r["node"]
            row = dict(r, moved=after and r["id"] in moved)
            if after and r["id"] in cards:
                row["card"] = cards[r["id"]]
            where.setdefault(node, []).append(row)
        return _node_map(plan, where)

    moves = [
        dict(
            m,
            app=reps.get(m["replica"], {}).get("app", ""),
            deployment=reps.get(m["replica"], {}).get("deployment", ""),
            gpu_memory_mib=reps.get(m["replica"], {}).get("gpu_memory_mib"),
        )
        for m in plan.moves
    ]
    return build(False), build(True), moves


def _actual_map(plan: CompactionPlan) -> list[dict]:
    """Nodes as they ended after execution (the replicas Ray reported running), beside the planned map."""
    final = (plan.outcome or {}).get("final") or []
    if not final:
        return []
    kind = {
        f"{r['app']}/{r['deployment']}": (r["resources"], r.get("team", "")) for r in plan.input.get("replicas", [])
    }
    where: dict[str, list[dict]] = {}
    for rep in final:
        resources, team = kind.get(rep["key"], ({}, ""))
        app, _, dep = rep["key"].partition("/")
        where.setdefault(rep["node"], []).append(
            {"id": rep["id"], "app": app, "deployment": dep, "team": team, "resources": resources}
        )
    return _node_map(plan, where)


@login_required
def plan_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _staff(request)
    plan = get_object_or_404(CompactionPlan.objects.select_related("cluster"), pk=pk)
    before, after, moves = _maps(plan)
    lag = (plan.created_at - plan.observed_at).total_seconds() if plan.observed_at else None
    return render(
        request,
        "compaction/plan.html",
        {
            "plan": plan,
            "before": before,
            "after": after,
            "actual": _actual_map(plan),
            "team_colours": _colours(plan),
            "moves": moves,
            "real_memory": any(n.get("gpu_cards") for n in plan.input.get("nodes", [])),
            "outcome": plan.outcome or {},
            "observed_lag_s": lag,
            "readiness": services.execution_readiness(plan.cluster),
        },
    )


@login_required
def plan_steps(request: HttpRequest, pk: int) -> HttpResponse:
    _staff(request)
    plan = get_object_or_404(CompactionPlan, pk=pk)
    return render(request, "compaction/_steps.html", {"plan": plan, "outcome": plan.outcome or {}})


@login_required
@require_POST
def plan_new(request: HttpRequest, cluster_id: int) -> HttpResponse:
    _staff(request)
    cluster = get_object_or_404(Cluster, pk=cluster_id)
    try:
        plan = services.plan_create(actor=request.user, cluster=cluster, source="ui")
    except ValidationError as exc:
        messages.error(request, error_text(exc))
        return redirect("dashboard:cluster_detail", pk=cluster.pk)
    return redirect("dashboard:compaction_plan", pk=plan.pk)


@login_required
@require_POST
def plan_execute(request: HttpRequest, pk: int) -> HttpResponse:
    _staff(request)
    plan = get_object_or_404(CompactionPlan, pk=pk)
    try:
        services.plan_execute(actor=request.user, plan=plan, source="ui")
        messages.success(request, "Compaction started; steps update below as each node drains.")
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    return redirect("dashboard:compaction_plan", pk=plan.pk)
