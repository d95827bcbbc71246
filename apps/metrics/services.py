"""Scrape Ray's Prometheus endpoints into stored series; roll them up; enforce retention."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction
from django.db.models import Avg, Count, Q, Sum
from django.db.models.functions import Trunc
from django.utils import timezone

from apps.applications.models import Application
from apps.applications.selectors import placed_replicas
from apps.clusters.models import Cluster
from apps.core.batches import delete_in_batches
from apps.core.observability import SCRAPES
from workers.clients import prometheus
from workers.clients.ray_dashboard import client_for

from . import gpus as gpu_view
from .models import MetricsConfig, Point, ScrapeRun, Series
from .sources import is_remote

log = logging.getLogger(__name__)

# family -> (how to store it, labels kept). Everything else Ray exports is ignored.
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "ray_serve_multiplexed_get_model_requests_counter": ("counter", ("application", "deployment", "replica")),
    "ray_serve_multiplexed_models_load_counter": ("counter", ("application", "deployment", "replica")),
    "ray_serve_multiplexed_models_unload_counter": ("counter", ("application", "deployment", "replica")),
    "ray_serve_multiplexed_model_load_latency_ms": ("histogram", ("application", "deployment", "replica", "le")),
    "ray_serve_num_multiplexed_models": ("gauge", ("application", "deployment", "replica")),
    "ray_serve_registered_multiplexed_model_id": ("gauge", ("application", "deployment", "replica", "model_id")),
    "ray_serve_num_http_requests": ("counter", ("application", "route", "status_code", "NodeAddress")),
    "ray_serve_http_request_latency_ms": ("histogram", ("application", "le", "NodeAddress")),
    "ray_resources": ("gauge", ("NodeAddress", "Name", "State")),
    "ray_node_gpus_utilization": ("gauge", ("ip", "GpuIndex")),
    # What the GPUs really hold and do (real GPUs only: Ray reads them through NVML). Per GPU, memory in MiB
    # (declared "bytes", filled in MiB by Ray's reporter); per Serve replica process, summed by Ray over the replicas
    # of one deployment on one node, kept per application and deployment (see _component).
    "ray_node_gram_used": ("gauge", ("ip", "GpuIndex")),
    "ray_node_gram_available": ("gauge", ("ip", "GpuIndex")),
    "ray_component_gpu_memory_mb": ("gauge", ("application", "deployment", "ip")),
    "ray_component_gpu_percentage": ("gauge", ("application", "deployment", "ip")),
    "ray_node_cpu_utilization": ("gauge", ("ip",)),
}
RETENTION = {Point.RAW: timedelta(days=1), Point.MINUTE: timedelta(days=7), Point.HOUR: timedelta(days=90)}


def series_key(name: str, labels: dict[str, str]) -> str:
    return hashlib.sha1(f"{name}|{json.dumps(labels, sort_keys=True)}".encode()).hexdigest()


@lru_cache(maxsize=131_072)
def _cached_key(name: str, items: tuple[tuple[str, str], ...]) -> str:
    """series_key for a label set seen before (the same series come back every scrape)."""
    return series_key(name, dict(items))


COMPONENT_FAMILIES = frozenset({"ray_component_gpu_memory_mb", "ray_component_gpu_percentage"})
REPLICA_COMPONENT = "ray::ServeReplica:"


def component_labels(labels: dict[str, str]) -> dict[str, str] | None:
    """A per-process GPU series' labels as the application and deployment it belongs to: Ray names the process of a
    Serve replica ``ray::ServeReplica:<app>:<deployment>``. None for any other process."""
    component = labels.get("Component", "")
    if not component.startswith(REPLICA_COMPONENT):
        return None
    app, sep, deployment = component[len(REPLICA_COMPONENT) :].partition(":")
    if not app or not sep:
        return None
    return {"application": app, "deployment": deployment, "ip": labels.get("ip", "")}


_Shape = tuple[str, str, dict[str, str], str]  # stored name, stored kind, kept labels (never mutated), series key
_SHAPES: dict[tuple[str, str], _Shape | None] = {}
_SHAPES_MAX = 131_072  # about 0.7 KB each (the head is shared with the parser's memo)
_UNSEEN = object()


def _shape(s: Any) -> _Shape | None:
    """How one sample is stored (None: it is not)."""
    kind, keep = FAMILIES[s.family]
    if kind == "histogram":
        if not s.name.endswith("_bucket"):
            return None
        name, stored = f"{s.family}_bucket", "counter"
    else:
        name, stored = s.family, kind
    if s.family == "ray_resources" and s.labels.get("Name") != "GPU":
        return None
    source = s.labels
    if s.family in COMPONENT_FAMILIES:
        source = component_labels(s.labels)
        if source is None:
            return None  # a process that is no Serve replica (a driver, a task): no application holds it
    labels = {k: source[k] for k in keep if k in source}
    return name, stored, labels, _cached_key(name, tuple(labels.items()))


def _normalise(samples: list[Any]) -> dict[tuple[str, str], tuple[str, dict[str, str], float]]:
    """Keep only wanted samples and labels; sum samples that collapse onto the same kept labels.

    How a series is stored is worked out once and remembered by its line's name and label block (the same text
    every scrape), so a series seen before costs a lookup.
    """
    out: dict[tuple[str, str], tuple[str, dict[str, str], float]] = {}
    for s in samples:
        memo = (s.family, s.head)
        shape = _SHAPES.get(memo, _UNSEEN) if s.head else _UNSEEN
        if shape is _UNSEEN:
            shape = _shape(s)
            if s.head:
                if len(_SHAPES) >= _SHAPES_MAX:
                    _SHAPES.clear()
                _SHAPES[memo] = shape
        if shape is None:
            continue
        name, stored, labels, key = shape
        prev = out.get((name, key))
        out[(name, key)] = (stored, labels, s.value + (prev[2] if prev else 0.0))
    return out


def scrape_claim(*, cluster_id: int, lease_s: float) -> str | None:
    """One scrape per cluster at a time: a lease taken with a conditional UPDATE, expiring if a worker dies."""
    owner = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        MetricsConfig.objects.filter(pk=cluster_id)
        .filter(Q(scrape_owner="") | Q(scrape_lease_until__lt=now))
        .update(scrape_owner=owner, scrape_lease_until=now + timedelta(seconds=lease_s))
    )
    return owner if claimed else None


def scrape_release(*, cluster_id: int, owner: str) -> None:
    MetricsConfig.objects.filter(pk=cluster_id, scrape_owner=owner).update(scrape_owner="", scrape_lease_until=None)


def scrape_cluster(cluster_id: int, targets: list[str] | None = None, now: datetime | None = None) -> ScrapeRun | None:
    """One scrape of every target, fetched concurrently under one deadline. Failures are recorded, never raised.

    Returns None when another scrape of the cluster holds its lease: one scrape per cluster at a time, so an
    increase is never counted twice.
    """
    owner = scrape_claim(cluster_id=cluster_id, lease_s=settings.SCRAPE_LEASE_S)
    if owner is None:
        return None
    try:
        return _scrape(cluster_id, owner, targets, now)
    finally:
        scrape_release(cluster_id=cluster_id, owner=owner)


def _scrape(cluster_id: int, owner: str, targets: list[str] | None, now: datetime | None) -> ScrapeRun:

    cluster = Cluster.objects.select_related("metrics_config").get(pk=cluster_id)
    config = cluster.metrics_config
    now = now or timezone.now()
    run = ScrapeRun.objects.create(cluster=cluster, started_at=now)
    errors: list[str] = []
    if is_remote(cluster):
        targets = []  # Ray's series are read from its Prometheus; only the control plane's own are sampled here
    if targets is None and config.metrics_targets:
        targets = [str(t) for t in config.metrics_targets]
    if targets is None:
        try:
            targets = prometheus.discover_targets(cluster.dashboard_url, token=cluster.auth_token)
        except prometheus.ScrapeError as exc:
            errors.append(str(exc))
            targets = []
    pages = fetch_all(targets, deadline_s=settings.SCRAPE_DEADLINE_S)
    snapshot = None
    if gpu_view.has_gpus(cluster):
        # Which process holds how much of which card: the node summary, whatever the metrics source (Ray's series
        # have no GPU index per process). A failure is recorded there, never the scrape's.
        snapshot = gpu_view.refresh(cluster, client_for(cluster, timeout=settings.SCRAPE_DEADLINE_S))
    known_ok = dict(config.scrape_targets_ok or {})
    values: dict = {}
    fresh: set[str] = set()  # series keys that may count from zero: their target was read whole before
    samples = failed = 0
    ok_now = []
    for target in targets:
        page = pages.get(target)
        if isinstance(page, Exception) or page is None:
            failed += 1
            errors.append(str(page) if page is not None else f"{target}: no answer")
            continue
        parsed = page
        samples += len(parsed)
        ok_now.append(target)
        for key, (kind, labels, value) in _normalise(parsed).items():
            if key in values:
                prev = values[key]
                values[key] = (kind, labels, prev[2] + value)
                if target not in known_ok:
                    fresh.discard(key[1])
            else:
                values[key] = (kind, labels, value)
                if target in known_ok:
                    fresh.add(key[1])
    values.update(_team_allocation(cluster))
    if snapshot:
        values.update(_app_gpu_use(cluster, snapshot))
    with transaction.atomic():
        # Still ours? A scrape that outlived its lease must not write over the one that took it.
        if not MetricsConfig.objects.select_for_update().filter(pk=cluster_id, scrape_owner=owner).exists():
            run.finished_at = timezone.now()
            run.errors = [*errors, "abandoned: the scrape outlived its lease; nothing was stored"][:50]
            run.targets, run.targets_failed, run.samples = len(targets), failed, samples
            run.save()
            return run
        written, resets = _store(cluster, values, now, fresh=fresh)
        for target in ok_now:
            known_ok[target] = now.isoformat()
        MetricsConfig.objects.filter(pk=cluster_id).update(
            scrape_targets_ok={t: known_ok[t] for t in targets if t in known_ok}
        )
    run.finished_at = timezone.now()
    run.targets, run.targets_failed, run.samples = len(targets), failed, samples
    run.points_written, run.counter_resets, run.errors = written, resets, errors[:50]
    run.save()

    SCRAPES.labels(cluster.name, "failed" if errors and not ok_now else "partial" if errors else "ok").inc()
    return run


def fetch_all(targets: list[str], *, deadline_s: float) -> dict[str, list[Any] | Exception]:
    """Fetch and parse every target at once; whatever has not answered by the deadline is a failure."""

    def one(target: str) -> list[Any]:
        page = prometheus.fetch(target, timeout=deadline_s, gzip=settings.METRICS_SCRAPE_GZIP)
        return list(prometheus.parse(page, set(FAMILIES)))

    if not targets:
        return {}
    out: dict[str, list[Any] | Exception] = {}
    pool = ThreadPoolExecutor(max_workers=min(16, len(targets)), thread_name_prefix="scrape")
    try:
        futures = {pool.submit(one, t): t for t in targets}
        done, _ = wait(futures, timeout=deadline_s)
        for future, target in futures.items():
            if future not in done:
                out[target] = prometheus.ScrapeError(f"{target}: no answer within {deadline_s:g} s")
                continue
            try:
                out[target] = future.result()
            except prometheus.ScrapeError as exc:
                out[target] = exc
            except Exception as exc:  # anything else one target does must not stop the others
                out[target] = prometheus.ScrapeError(f"{target}: {type(exc).__name__}: {str(exc)[:200]}")
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


def _team_allocation(cluster: Cluster) -> dict[tuple[str, str], tuple[str, dict[str, str], float]]:
    """GPUs held now by each team and each application's running replicas (placement from the Serve status)."""
    per_team: dict[str, float] = defaultdict(float)
    out = {}
    apps = Application.objects.filter(cluster=cluster, deleted_at__isnull=True).select_related("team")
    placed = placed_replicas(cluster)
    held: dict[int, float] = defaultdict(float)
    for rep in placed:
        if rep.running:
            held[rep.app.pk] += float(rep.resources.get("GPU", 0) or 0)
    for app in apps:
        per_team[app.team.slug] += held[app.pk]
        labels = {"team": app.team.slug, "application": app.serve_name}
        out[("cp_app_gpus_allocated", series_key("cp_app_gpus_allocated", labels))] = ("gauge", labels, held[app.pk])
    for team, gpus in per_team.items():
        labels = {"team": team}
        out[("cp_team_gpus_allocated", series_key("cp_team_gpus_allocated", labels))] = ("gauge", labels, gpus)
    # Per node, from placement: distinct even where several nodes share an IP (as on one machine).
    per_node: dict[str, float] = {n["node_id"]: 0.0 for n in cluster.nodes or [] if n.get("state") == "ALIVE"}
    for rep in placed:
        if rep.running and rep.node_id:
            per_node[rep.node_id] = per_node.get(rep.node_id, 0.0) + float(rep.resources.get("GPU", 0) or 0)
    for node_id, gpus in per_node.items():
        labels = {"node": node_id[:12]}
        out[("cp_node_gpus_allocated", series_key("cp_node_gpus_allocated", labels))] = ("gauge", labels, gpus)
    return out


def _app_gpu_use(cluster: Cluster, snapshot: list[dict]) -> dict[tuple[str, str], tuple[str, dict[str, str], float]]:
    """The control plane's own record of real GPU use per application, from the node summary (NVML per process):
    memory held (MiB) and utilisation (percent of one GPU, summed over its processes), 0 for an application whose
    GPU replicas run on nodes whose GPUs NVML reads and have no process on any (on a node with logical GPUs nothing
    is known, so nothing is recorded). Ray's own per-process utilisation series keeps its last value above 0 while a
    process sits at 0% (its reporter records it only above 0), so idle verdicts and showback read these."""
    read = {g["node_id"] for g in snapshot}
    use: dict[tuple[str, str], list[float]] = {}
    for rep in placed_replicas(cluster):
        if rep.running and rep.node_id in read and float(rep.resources.get("GPU", 0) or 0) > 0:
            use.setdefault((rep.app.team.slug, rep.app.serve_name), [0.0, 0.0])
    for g in snapshot:
        for p in g["processes"]:
            if p.get("application"):
                row = use.setdefault((p["team"], p["application"]), [0.0, 0.0])
                row[0] += p["memory_mib"]
                row[1] += p["utilization"] or 0.0
    out = {}
    for (team, application), (memory, utilization) in use.items():
        labels = {"team": team, "application": application}
        for name, value in (("cp_app_gpu_memory_mib", memory), ("cp_app_gpu_utilization", utilization)):
            out[(name, series_key(name, labels))] = ("gauge", labels, value)
    return out


CHUNK = 2000  # ids or keys per statement (SQLite allows 32,766 parameters; PostgreSQL's 65,535)


@transaction.atomic
def _store(cluster: Cluster, values: dict, now: datetime, fresh: set[str]) -> tuple[int, int]:
    """Gauges are stored as they are; counters as the increase since the last scrape (a drop is a restart).

    A counter seen for the first time counts from zero when its target was read whole before (``fresh``): it was
    born since. Otherwise (the target's first scrape) its value is history, not an increase.

    Written with a statement per table, not an object per row: COPY on PostgreSQL, executemany elsewhere.
    """
    keys = [k for _, k in values]
    existing = _series_ids(cluster, keys)
    missing = [
        Series(cluster=cluster, name=name, labels=labels, key=key, kind=kind)
        for (name, key), (kind, labels, _) in values.items()
        if key not in existing
    ]
    if missing:
        Series.objects.bulk_create(missing, ignore_conflicts=True, batch_size=CHUNK)
        existing.update(_series_ids(cluster, [s.key for s in missing]))
    points: list[tuple[int, float]] = []
    counters: list[tuple[float, int]] = []  # counters whose raw value moved: their new last_raw
    touched: list[int] = []  # the rest: seen again (last_seen_at is refreshed every few minutes, not every scrape)
    resets = 0
    for (_, key), (kind, _, value) in values.items():
        sid, last = existing[key]
        if kind == "counter":
            if last is None:
                delta = value if key in fresh else None
            elif value < last:
                delta, resets = value, resets + 1  # restarted replica: the counter began again at zero
            else:
                delta = value - last
            if value != last:
                counters.append((value, sid))
            else:
                touched.append(sid)
            if delta is not None:
                points.append((sid, delta))
        else:
            touched.append(sid)
            points.append((sid, value))
    _write(points, counters, touched, now)
    return len(points), resets


def _series_ids(cluster: Cluster, keys: list[str]) -> dict[str, tuple[int, float | None]]:
    """id and last raw value of each key's series: the cluster's recently seen series in one read, the rest (new,
    or back after a while) by key."""
    wanted = set(keys)
    recent = Series.objects.filter(cluster=cluster, last_seen_at__gte=timezone.now() - timedelta(hours=1))
    out = {key: (pk, last) for key, pk, last in recent.values_list("key", "pk", "last_raw") if key in wanted}
    keys = [k for k in keys if k not in out]
    for i in range(0, len(keys), CHUNK):
        rows = Series.objects.filter(cluster=cluster, key__in=keys[i : i + CHUNK]).values_list("key", "pk", "last_raw")
        out.update({key: (pk, last) for key, pk, last in rows})
    return out


SEEN_REFRESH = timedelta(minutes=10)  # how stale last_seen_at may be (it only tells recent series from old)


def _write(
    points: list[tuple[int, float]], counters: list[tuple[float, int]], touched: list[int], now: datetime
) -> None:
    """Raw points (series id, value) at ``now``; the moved counters' last raw values; the sighting of the rest,
    written only when the stored one is older than SEEN_REFRESH, so an unchanged series costs no row update."""
    point_t, series_t = Point._meta.db_table, Series._meta.db_table
    conn = connections[router.db_for_write(Point)]
    stale = now - SEEN_REFRESH
    with conn.cursor() as cur:
        if conn.vendor == "postgresql":
            stamp = now.isoformat()
            with cur.cursor.copy(f"COPY {point_t} (series_id, resolution, ts, value, samples) FROM STDIN") as copy:
                copy.write("".join(f"{sid}\t0\t{stamp}\t{value!r}\t1\n" for sid, value in points))
            if counters:
                cur.execute(
                    f"UPDATE {series_t} AS s SET last_raw = v.raw, last_seen_at = %s "
                    "FROM unnest(%s::bigint[], %s::double precision[]) AS v(id, raw) WHERE s.id = v.id",
                    [now, [sid for _, sid in counters], [raw for raw, _ in counters]],
                )
            if touched:
                cur.execute(
                    f"UPDATE {series_t} SET last_seen_at = %s WHERE id = ANY(%s::bigint[]) "
                    "AND (last_seen_at IS NULL OR last_seen_at < %s)",
                    [now, touched, stale],
                )
        else:
            stamp = conn.ops.adapt_datetimefield_value(now)
            raw = cur.cursor  # the driver's own cursor: its executemany, without a wrapper per row
            raw.executemany(
                f"INSERT INTO {point_t} (series_id, resolution, ts, value, samples) VALUES (?, 0, ?, ?, 1)",
                [(sid, stamp, value) for sid, value in points],
            )
            raw.executemany(
                f"UPDATE {series_t} SET last_raw = ?, last_seen_at = ? WHERE id = ?",
                [(value, stamp, sid) for value, sid in counters],
            )
            stale_stamp = conn.ops.adapt_datetimefield_value(stale)
            for i in range(0, len(touched), CHUNK):
                ids = touched[i : i + CHUNK]
                raw.execute(
                    f"UPDATE {series_t} SET last_seen_at = ? WHERE id IN ({','.join('?' * len(ids))}) "
                    "AND (last_seen_at IS NULL OR last_seen_at < ?)",
                    [stamp, *ids, stale_stamp],
                )


def rollup(resolution: int, *, lookback: timedelta, now: datetime | None = None) -> int:
    """Recompute rollup points for complete buckets in the lookback window (idempotent)."""
    now = now or timezone.now()
    source = Point.RAW if resolution == Point.MINUTE else Point.MINUTE
    kind = "minute" if resolution == Point.MINUTE else "hour"
    end = (
        now.replace(second=0, microsecond=0)
        if resolution == Point.MINUTE
        else now.replace(minute=0, second=0, microsecond=0)
    )
    start = end - lookback
    base = Point.objects.filter(resolution=source, ts__gte=start, ts__lt=end)
    rows = []
    for series_kind, agg in (("counter", Sum("value")), ("gauge", Avg("value"))):
        grouped = (
            base.filter(series__kind=series_kind)
            .annotate(bucket=Trunc("ts", kind))
            .values("series_id", "bucket")
            .annotate(v=agg, n=Count("id"))
        )
        rows += [
            Point(series_id=g["series_id"], resolution=resolution, ts=g["bucket"], value=g["v"], samples=g["n"])
            for g in grouped
        ]
    with transaction.atomic():
        Point.objects.filter(resolution=resolution, ts__gte=start, ts__lt=end).delete()
        Point.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


RETENTION_BATCH = 10_000


def enforce_retention(now: datetime | None = None, batch: int = RETENTION_BATCH) -> int:
    """Delete expired points a batch at a time, each batch its own short transaction: scrapes and rollups write
    between batches instead of waiting behind one long DELETE (on SQLite the only writer lock)."""
    now = now or timezone.now()
    removed = 0
    for resolution, keep in RETENTION.items():
        expired = Point.objects.filter(resolution=resolution, ts__lt=now - keep)
        removed += delete_in_batches(expired, batch, order="ts")
    # A fleet scrapes 2,000 times a minute: two days of scrape records go a batch at a time too.
    delete_in_batches(ScrapeRun.objects.filter(started_at__lt=now - timedelta(days=2)), batch)
    return removed
