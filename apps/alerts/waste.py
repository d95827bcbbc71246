"""A team's weekly GPU waste report: GPU-hours allocated against used, idle apps and cache thrash, each with a
link to fix it. Computed from the stored series and the week's incidents; kept, so page, API and email agree."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from apps.applications.models import Application
from apps.core.links import public_url
from apps.metrics.sources import SourceUnavailable, query
from apps.teams.models import Team
from apps.teams.selectors import admin_emails

from .models import Incident, WasteReport

log = logging.getLogger(__name__)


def week_ending(now: datetime) -> datetime:
    """The last Monday 00:00 UTC at or before now: reports cover the seven days before it."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def compute(team: Team, start: datetime, end: datetime, *, now: datetime | None = None) -> dict[str, Any]:
    """The report for [start, end). ``now`` is the moment the window was taken at: a window of the last seven days
    read at a later ``now`` would look older than a week and be read from hourly rollups, which miss the hour in
    progress (the page said 0 GPU-hours while the showback, read from minutes, said 0.18)."""
    apps = list(Application.objects.filter(team=team, deleted_at__isnull=True).select_related("cluster", "team"))
    by_serve = {a.serve_name: a for a in apps}
    clusters = list({a.cluster_id: a.cluster for a in apps}.values())
    allocated: dict[str, float] = {}
    active_hours: dict[str, set[int]] = {}
    unavailable: list[str] = []  # clusters whose Prometheus did not answer: their "used" hours are unknown
    now = now or timezone.now()
    if clusters:
        for s in query("gpu_hours", cluster=clusters, start=start, end=end, step=3600, now=now, team=team.slug):
            allocated[s["labels"]["application"]] = sum(v for _, v in s["points"])
        # Hours in which the app served requests, and GPUs held in each hour.
        for cluster in clusters:
            try:
                served = query("requests", cluster=[cluster], start=start, end=end, step=3600, now=now)
            except SourceUnavailable as exc:
                unavailable.append(f"{cluster.name}: {exc}")
                continue
            for s in served:
                active_hours.setdefault(s["labels"].get("application", ""), set()).update(
                    int(ts) for ts, v in s["points"] if v > 0
                )
    busy, held = _real_use(clusters, team, start, end, now) if clusters else ({}, {})
    hours = max(1.0, (end - start).total_seconds() / 3600)
    rows = []
    for serve_name, gpu_h in sorted(allocated.items()):
        app = by_serve.get(serve_name)
        active = len(active_hours.get(serve_name, set()))
        row = {
            "application": app.name if app else serve_name,
            "cluster": app.cluster.name if app else "",
            "gpu_hours_allocated": round(gpu_h, 2),
            "active_hours": active,
            "url": _url("dashboard:app_detail", app.pk) if app else None,
        }
        if serve_name in busy:
            # Real GPUs: the GPU-hours its processes kept busy (utilisation-weighted), and the memory they held.
            row.update(
                gpu_hours_used=round(min(gpu_h, busy[serve_name]), 2),
                gpu_memory_gib_hours=round(held.get(serve_name, 0.0), 2),
                method="utilisation",
            )
        else:
            row.update(gpu_hours_used=round(gpu_h * min(1.0, active / hours), 2), method="served hours")
        rows.append(row)
    # Open at some time in the period: opened before its end, and not resolved before its start.
    incidents = Incident.objects.filter(team=team, kind__in=["idle_gpu", "cache_thrash"], opened_at__lt=end).filter(
        Q(resolved_at__isnull=True) | Q(resolved_at__gte=start)
    )
    idle, thrash = [], []
    for inc in incidents.select_related("application").order_by("-opened_at")[:100]:
        item = {
            "incident": inc.pk,
            "application": inc.application.name if inc.application_id else None,
            "summary": inc.summary,
            "state": inc.state,
            "incident_url": _url("dashboard:incident_detail", inc.pk),
            "fix_url": _url("dashboard:app_detail", inc.application_id) if inc.application_id else None,
        }
        if inc.kind == "idle_gpu":
            item["gpu_hours_per_day"] = inc.evidence.get("gpu_hours_per_day")
            item["fix"] = "scale it down (num_replicas or autoscaling min_replicas 0) or delete it"
            idle.append(item)
        else:
            item["suggestion"] = (inc.evidence.get("suggestion") or {}).get("text")
            item["fix"] = "change max_num_models_per_replica or the replica count as suggested"
            thrash.append(item)
    total_alloc = round(sum(r["gpu_hours_allocated"] for r in rows), 2)
    total_used = round(sum(r["gpu_hours_used"] for r in rows), 2)
    return {
        "team": team.slug,
        "period_start": start.isoformat(),
        "period_end": end.isoformat(),
        "gpu_hours_allocated": total_alloc,
        "gpu_hours_used": total_used,
        "gpu_hours_idle": round(total_alloc - total_used, 2),
        "applications": rows,
        "idle_apps": idle,
        "cache_thrash": thrash,
        "how": "Allocated: GPU-hours Ray placed for the app's running replicas. Used, where Ray reads the GPUs "
        "(NVML): the GPU-hours its processes kept busy, each hour's average utilisation (percent of one GPU, "
        "summed over its processes) times the hour, with the GPU memory they held in GiB-hours. Where the GPUs are "
        "logical (Ray reports no utilisation), used is the allocated GPU-hours in the hours the app served "
        "requests. Each application's row says which.",
        "gpu_memory_gib_hours": round(sum(r.get("gpu_memory_gib_hours", 0.0) for r in rows), 2),
        "real_gpus": any(r["method"] == "utilisation" for r in rows),
        "metrics_unavailable": unavailable,
    }


def _real_use(
    clusters: list, team: Team, start: datetime, end: datetime, now: datetime
) -> tuple[dict[str, float], dict[str, float]]:
    """Per application, where Ray reads its GPUs: GPU-hours kept busy and GiB-hours of GPU memory held, from the
    control plane's own hourly record of the node summary (whatever the metrics source)."""

    def hours_of(name: str, scale: float) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in query(name, cluster=clusters, start=start, end=end, step=3600, now=now, team=team.slug):
            out[s["labels"].get("application", "")] = sum(v * scale for _, v in s["points"] if v is not None)
        return out

    return hours_of("app_gpu_utilization", 1 / 100), hours_of("app_gpu_memory_held_mib", 1 / 1024)


def _url(name: str, pk: int) -> str:
    return public_url(reverse(name, args=[pk]))


def report_for(team: Team, end: datetime) -> WasteReport:
    existing = WasteReport.objects.filter(team=team, period_end=end).first()
    if existing:
        return existing
    start = end - timedelta(days=7)
    try:
        return WasteReport.objects.create(team=team, period_start=start, period_end=end, body=compute(team, start, end))
    except IntegrityError:  # made meanwhile by another worker
        return WasteReport.objects.get(team=team, period_end=end)


def send_weekly_reports(now: datetime | None = None) -> int:
    """Make last week's report for every team that has none yet, and mail it to the team's admins."""
    end = week_ending(now or timezone.now())
    sent = 0
    for team in Team.objects.exclude(waste_reports__period_end=end):
        report = report_for(team, end)
        emails = admin_emails([team.pk])
        if not emails or report.emailed_to:
            continue
        b = report.body
        lines = [
            f"GPU waste report for {team.slug}, {b['period_start'][:10]} to {b['period_end'][:10]}",
            "",
            f"GPU-hours allocated {b['gpu_hours_allocated']}, used {b['gpu_hours_used']}, idle {b['gpu_hours_idle']}",
            "",
        ]
        lines += [f"Idle: {i['summary']} -> {i['fix_url'] or i['incident_url']}" for i in b["idle_apps"]]
        lines += [f"Cache thrash: {i['summary']} -> {i['fix_url'] or i['incident_url']}" for i in b["cache_thrash"]]
        lines += ["", public_url(reverse("dashboard:team_waste", args=[team.slug]))]
        try:
            send_mail(f"GPU waste report: {team.slug}", "\n".join(lines), settings.DEFAULT_FROM_EMAIL, emails)
        except Exception:  # noqa: BLE001 - the report stays on the page; the next run retries the mail
            log.warning("could not mail the waste report of %s", team.slug, exc_info=True)
            continue
        WasteReport.objects.filter(pk=report.pk).update(emailed_to=emails)
        sent += 1
    return sent
