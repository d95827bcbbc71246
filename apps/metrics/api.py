from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.applications.selectors import visible_application
from apps.clusters.selectors import cluster_by_id
from apps.teams.principal import principal_of

from . import gpus, prom, visibility
from .selectors import SERIES
from .sources import query

MAX_POINTS = 2000


def _time(value: str | None, default: datetime, field: str) -> datetime:
    if not value:
        return default
    if value.replace(".", "", 1).isdigit():
        return datetime.fromtimestamp(float(value), tz=timezone.get_current_timezone())
    parsed = parse_datetime(value)
    if parsed is None:
        raise ValidationError({field: ["Must be a Unix timestamp or an ISO 8601 date-time."]})
    return parsed if parsed.tzinfo else timezone.make_aware(parsed)


class MetricsView(APIView):
    """Time series: the same series the dashboard's charts draw."""

    @extend_schema(
        parameters=[
            OpenApiParameter("series", str, required=True, enum=list(SERIES)),
            OpenApiParameter("cluster", int),
            OpenApiParameter("application", int),
            OpenApiParameter("team", str),
            OpenApiParameter("start", str),
            OpenApiParameter("end", str),
            OpenApiParameter("step", int),
        ],
        responses={200: dict},
    )
    def get(self, request):
        p = request.query_params
        name = p.get("series", "")
        if name not in SERIES:
            raise ValidationError({"series": [f"One of: {', '.join(SERIES)}."]})
        now = timezone.now()
        end = _time(p.get("end"), now, "end")
        start = _time(p.get("start"), end - timedelta(hours=1), "start")
        if start >= end:
            raise ValidationError({"start": ["Must be before end."]})
        try:
            step = int(p.get("step") or max(15, int((end - start).total_seconds() // 200)))
        except ValueError as exc:
            raise ValidationError({"step": ["Must be a whole number of seconds."]}) from exc
        if step < 1 or (end - start).total_seconds() / step > MAX_POINTS:
            raise ValidationError({"step": [f"Too small for this range: at most {MAX_POINTS} points per series."]})
        principal = principal_of(request)
        application = app = None
        cluster = None
        if p.get("application"):
            app = visible_application(principal, p["application"])
            if app is None:
                raise ValidationError({"application": ["No such application among your teams'."]})
            application, cluster = app.serve_name, app.cluster
        team = p.get("team")
        if team and not principal.teams().filter(slug=team).exists():
            raise ValidationError({"team": ["No such team among yours."]})
        if name == "team_gpus_allocated" and not team and not principal.is_staff:
            raise ValidationError({"team": ["Required for team_gpus_allocated."]})
        if cluster is None:
            cluster_id = p.get("cluster", "")
            cluster = cluster_by_id(cluster_id)
            if cluster is None:
                raise ValidationError({"cluster": ["Required (or application): the id of a registered cluster."]})
        try:
            data = query(
                name, cluster=cluster, start=start, end=end, step=step, now=now, application=application, team=team
            )
        except prom.SourceUnavailable as exc:
            return Response({"detail": f"The cluster's metrics source did not answer: {exc}", "series": []}, status=503)
        data = (
            visibility.since(data, app.created_at, step)
            if app
            else visibility.for_principal(principal, cluster, data, step)
        )
        return Response({"series": data, "start": int(start.timestamp()), "end": int(end.timestamp()), "step": step})


class ClusterGpusView(APIView):
    """What each real GPU of a cluster holds now: per card, its processes, the replica each is, the memory it holds
    against what it was allocated. A team sees its own applications' processes and the rest of each card only as
    memory held by others; staff see every process. ``real`` is false where the GPUs are logical (no NVML)."""

    @extend_schema(responses={200: dict})
    def get(self, request, pk: int):
        cluster = cluster_by_id(pk)
        if cluster is None:
            raise NotFound("No such cluster.")
        principal = principal_of(request)
        view = gpus.view_for(principal, cluster)
        return Response(
            {
                "cluster": cluster.pk,
                "real": view.real,
                "has_gpus": view.has_gpus,
                "read_at": view.at.isoformat() if view.at else None,
                # the dashboard client's error names the cluster's internal address: staff only
                "error": view.error if principal.is_staff else ("the last read failed" if view.error else ""),
                "gpus": view.gpus,
            }
        )
