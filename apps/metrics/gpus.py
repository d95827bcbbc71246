"""What each real GPU holds now, and whose: NVML's per-process view (the dashboard's node summary) joined with
Serve's replicas (by node and process id), refreshed with every metrics scrape whatever the metrics source.

Ray's per-process series (``ray_component_gpu_memory_mb``) carry no GPU index, and sum every replica of one
deployment on one node; only the node summary says which process holds how much of which card. So the cluster page
can say "team-a/llm's replica holds 60 GiB of the 80 GiB of GPU 0 on 10.0.0.5 on a 0.25 allocation".

What cannot be attributed: a process on a GPU that is no replica of a managed application (another Ray workload, a
process outside Ray, a rollout's new version until it is promoted) is shown as such, with its memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from apps.applications.models import Application
from apps.applications.selectors import placed_replicas
from apps.clusters.models import Cluster
from apps.teams.principal import Principal

from .models import MetricsConfig

# A replica holds more of a card than it was allocated when its share of the card's memory exceeds its GPU
# allocation by this much (fractional num_gpus is only a scheduling label: nothing stops it).
OVER_ALLOCATION_MARGIN = 0.05


def _num(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def has_gpus(cluster: Cluster) -> bool:
    """The cluster has GPU resources, logical or real (as last observed)."""
    return any(float((n.get("resources_total") or {}).get("GPU", 0) or 0) > 0 for n in cluster.nodes or [])


def build(summary: list[dict], cluster: Cluster) -> list[dict]:
    """The cluster's GPUs from the dashboard's node summary, each process named by the replica it is."""
    by_pid: dict[tuple[str, int], Any] = {}
    for rep in placed_replicas(cluster):
        pid = rep.replica.get("pid")
        if pid and rep.node_id:
            by_pid[(rep.node_id, int(pid))] = rep
    out = []
    for node in summary:
        raylet = node.get("raylet") or {}
        node_id = raylet.get("nodeId") or node.get("nodeId") or ""
        ip = node.get("ip") or raylet.get("nodeManagerAddress") or ""
        for g in node.get("gpus") or []:
            total = _num(g.get("memoryTotal")) or 0.0
            processes = []
            for p in g.get("processesPids") or []:
                pid = int(p.get("pid") or 0)
                rep = by_pid.get((node_id, pid))
                memory = _num(p.get("gpuMemoryUsage")) or 0.0
                row = {
                    "pid": pid,
                    "memory_mib": memory,
                    "utilization": _num(p.get("gpuUtilization")),
                    "application_id": None,
                    "application": "",
                    "team": "",
                    "deployment": "",
                    "replica": "",
                    "allocated": None,
                }
                if rep is not None:
                    allocated = _num(rep.resources.get("GPU")) or 0.0
                    share = memory / total if total else 0.0
                    row.update(
                        application_id=rep.app.pk,
                        application=rep.app.serve_name,
                        team=rep.app.team.slug,
                        name=rep.app.name,
                        deployment=rep.deployment,
                        replica=rep.replica.get("replica_id", ""),
                        allocated=allocated,
                        card_share=round(share, 4),
                        over_allocation=share > allocated + OVER_ALLOCATION_MARGIN,
                    )
                processes.append(row)
            out.append(
                {
                    "node_id": node_id,
                    "ip": ip,
                    "index": g.get("index"),
                    "name": g.get("name") or "",
                    "uuid": g.get("uuid") or "",
                    "memory_total_mib": total,
                    "memory_used_mib": _num(g.get("memoryUsed")) or 0.0,
                    "utilization": _num(g.get("utilizationGpu")),
                    "processes": sorted(processes, key=lambda r: -r["memory_mib"]),
                }
            )
    return sorted(out, key=lambda g: (g["ip"], g["node_id"], g["index"] if g["index"] is not None else -1))


def refresh(cluster: Cluster, client: Any, now: datetime | None = None) -> list[dict] | None:
    """Read the GPUs through ``client`` (the cluster's dashboard client) and keep them; None when Ray did not answer
    (the reason is kept, the last reading too)."""
    now = now or timezone.now()
    try:
        gpus = build(client.node_summary(), cluster)
    except Exception as exc:  # one cluster's dashboard trouble is the scrape's error, never the scrape's end
        MetricsConfig.objects.filter(pk=cluster.pk).update(gpus_error=str(exc)[:300])
        return None
    MetricsConfig.objects.filter(pk=cluster.pk).update(gpus=gpus, gpus_at=now, gpus_error="")
    return gpus


@dataclass(frozen=True)
class GpuView:
    """A cluster's GPUs as one principal may see them."""

    gpus: list[dict]
    at: datetime | None
    error: str
    has_gpus: bool  # the cluster has GPU resources (logical or real)

    @property
    def real(self) -> bool:
        """Ray reads the GPUs through NVML (otherwise they are logical: allocation is the only measure)."""
        return bool(self.gpus)


def view_for(principal: Principal, cluster: Cluster) -> GpuView:
    """The cluster's GPUs; a team sees its own applications' processes by name and the rest of each card only as
    memory held by others (staff see every process)."""
    config = MetricsConfig.objects.filter(pk=cluster.pk).values("gpus", "gpus_at", "gpus_error").first() or {}
    gpus = [dict(g) for g in config.get("gpus") or []]
    if not principal.is_staff:
        own = set(principal.restrict(Application.objects.filter(cluster=cluster)).values_list("pk", flat=True))
        for g in gpus:
            mine = [p for p in g["processes"] if p.get("application_id") in own]
            others = [p for p in g["processes"] if p.get("application_id") not in own]
            g["processes"] = mine
            g["others_mib"] = sum(p["memory_mib"] for p in others)
    return GpuView(gpus, config.get("gpus_at"), config.get("gpus_error", ""), has_gpus(cluster) or bool(gpus))


def for_display(view: GpuView, only_app: int | None = None) -> GpuView:
    """The view with what a page draws: GiB, each holder's segment of the card's memory bar, percentages."""
    gpus = []
    for g in view.gpus:
        total = g["memory_total_mib"] or 1.0
        processes = [
            {**p, "gib": round(p["memory_mib"] / 1024, 1), "card_pct": round(100 * p["memory_mib"] / total)}
            for p in g["processes"]
        ]
        segments = [
            {
                "label": f"{p['team']}/{p['name']}" if p.get("application_id") else f"pid {p['pid']}",
                "gib": p["gib"],
                "pct": round(100 * p["memory_mib"] / total, 1),
                "css": "bg-warning" if p.get("over_allocation") else "" if p.get("application_id") else "bg-secondary",
            }
            for p in processes
        ]
        others = g.get("others_mib", 0.0)
        if others:
            segments.append(
                {
                    "label": "other teams",
                    "gib": round(others / 1024, 1),
                    "pct": round(100 * others / total, 1),
                    "css": "bg-secondary",
                }
            )
        gpus.append(
            {
                **g,
                "processes": processes,
                "segments": segments,
                "used_gib": round(g["memory_used_mib"] / 1024, 1),
                "total_gib": round(g["memory_total_mib"] / 1024, 1),
                "others_gib": round(others / 1024, 1),
                "mine": any(p.get("application_id") == only_app for p in processes) if only_app else True,
            }
        )
    return GpuView(gpus, view.at, view.error, view.has_gpus)


def app_use(gpus: list[dict], app_id: int) -> dict[str, Any]:
    """One application's processes on the cluster's GPUs now, and its totals."""
    rows = []
    for g in gpus:
        for p in g["processes"]:
            if p.get("application_id") == app_id:
                rows.append({**p, "gpu": g})
    known = [r["utilization"] for r in rows if r["utilization"] is not None]
    return {
        "processes": rows,
        "memory_mib": sum(r["memory_mib"] for r in rows),
        "utilization": sum(known) if known else None,
        "allocated": sum(r["allocated"] or 0 for r in rows),
        "over_allocation": [r for r in rows if r.get("over_allocation")],
    }


def apps_use(apps: list[Application]) -> list[dict[str, Any]]:
    """For a team page: each of these (visible) applications' GPU use now, on clusters where Ray reads the GPUs
    (none on logical). One query, however many applications and clusters."""
    snapshots = dict(
        MetricsConfig.objects.filter(pk__in={a.cluster_id for a in apps}).exclude(gpus=[]).values_list("pk", "gpus")
    )
    rows = []
    for app in apps:
        if not snapshots.get(app.cluster_id):
            continue
        use = app_use(snapshots[app.cluster_id], app.pk)
        rows.append(
            {
                "app": app,
                "memory_gib": round(use["memory_mib"] / 1024, 1),
                "utilization": use["utilization"],
                "allocated": use["allocated"],
                "over_allocation": len(use["over_allocation"]),
                "cards": len({r["gpu"]["uuid"] for r in use["processes"]}),
            }
        )
    return rows
