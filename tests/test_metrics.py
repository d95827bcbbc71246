"""Scraping, counters, failures, derived series, rollups, the model catalog (Ray faked at the client seam)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.deploys.config import build_serve_config
from apps.metrics import services
from apps.metrics.models import MetricsConfig, Point, ScrapeRun, Series
from apps.metrics.selectors import _quantile
from apps.metrics.sources import query
from workers.clients import prometheus

pytestmark = pytest.mark.django_db

MUX = 'application="t--mux",deployment="Mux",replica="{replica}"'


def exposition(requests: float, loads: float, replica: str = "r1", buckets: tuple = (1, 2, 2)) -> str:
    labels = MUX.format(replica=replica)
    le = ["10.0", "100.0", "+Inf"]
    lines = [
        "# TYPE ray_serve_multiplexed_get_model_requests_counter_total counter",
        f'ray_serve_multiplexed_get_model_requests_counter_total{{{labels},WorkerId="w"}} {requests}',
        "# TYPE ray_serve_multiplexed_models_load_counter_total counter",
        f"ray_serve_multiplexed_models_load_counter_total{{{labels}}} {loads}",
        "# TYPE ray_serve_multiplexed_model_load_latency_ms histogram",
        *[
            f'ray_serve_multiplexed_model_load_latency_ms_bucket{{{labels},le="{b}"}} {c}'
            for b, c in zip(le, buckets, strict=True)
        ],
        f"ray_serve_multiplexed_model_load_latency_ms_count{{{labels}}} {buckets[-1]}",
        f"ray_serve_multiplexed_model_load_latency_ms_sum{{{labels}}} 50",
        "# TYPE ray_resources gauge",
        'ray_resources{Name="GPU",State="USED",NodeAddress="10.0.0.2"} 1.5',
        'ray_resources{Name="CPU",State="USED",NodeAddress="10.0.0.2"} 3',
        "# TYPE ray_serve_registered_multiplexed_model_id gauge",
        f'ray_serve_registered_multiplexed_model_id{{{labels},model_id="m1"}} 1',
        f'ray_serve_registered_multiplexed_model_id{{{labels},model_id="m2"}} 0',
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def fake(monkeypatch):
    pages: dict[str, str | Exception] = {}

    def fetch(target: str, timeout: float = 5, gzip: bool = True) -> str:
        page = pages.get(target, prometheus.ScrapeError(f"{target}: ConnectionError: refused"))
        if isinstance(page, Exception):
            raise page
        return page

    monkeypatch.setattr(prometheus, "fetch", fetch)
    return pages


def scrape(cluster, targets, at):
    return services.scrape_cluster(cluster.pk, targets=targets, now=at)


def test_counters_become_deltas_and_resets_never_go_negative(cluster, fake):
    t0 = timezone.now() - timedelta(minutes=10)
    fake["a"] = exposition(5, 3)
    first = scrape(cluster, ["a"], t0)
    assert first.targets == 1 and first.targets_failed == 0
    assert not Point.objects.filter(series__kind="counter").exists()  # history before the first scrape is not a rate
    fake["a"] = exposition(9, 4)
    scrape(cluster, ["a"], t0 + timedelta(seconds=15))
    fake["a"] = exposition(2, 2)  # the replica restarted: its counters began again
    run = scrape(cluster, ["a"], t0 + timedelta(seconds=30))
    assert run.counter_resets >= 2
    reqs = Series.objects.get(name="ray_serve_multiplexed_get_model_requests_counter")
    assert reqs.labels == {"application": "t--mux", "deployment": "Mux", "replica": "r1"}  # WorkerId dropped
    assert list(reqs.points.order_by("ts").values_list("value", flat=True)) == [4.0, 2.0]
    assert not Point.objects.filter(value__lt=0).exists()
    assert not Series.objects.filter(name="ray_resources", labels__Name="CPU").exists()


def test_missing_target_and_malformed_text_are_recorded_not_raised(cluster, fake):
    fake["good"] = exposition(1, 1)
    fake["bad"] = 'ray_serve_x{unterminated="oops 1\n'
    run = scrape(cluster, ["good", "bad", "gone"], timezone.now())
    assert run.targets == 3 and run.targets_failed == 2
    assert any("gone" in e for e in run.errors) and any("malformed" in e for e in run.errors)
    assert Series.objects.filter(name="ray_resources").exists()


def test_service_discovery_failure_is_recorded(cluster):
    run = services.scrape_cluster(cluster.pk)  # the cluster's dashboard URL answers nothing
    assert run.targets == 0 and "service discovery" in run.errors[0]
    assert ScrapeRun.objects.count() == 1


def test_hit_rate_loads_and_latency_quantiles(cluster, fake):
    t0 = timezone.now() - timedelta(minutes=5)
    fake["a"] = exposition(0, 0, buckets=(0, 0, 0))
    scrape(cluster, ["a"], t0)
    fake["a"] = exposition(9, 7, buckets=(4, 6, 7))
    scrape(cluster, ["a"], t0 + timedelta(seconds=30))
    out = query(
        "cache_hit_rate", cluster=cluster, start=t0, end=t0 + timedelta(minutes=2), step=120, now=timezone.now()
    )
    assert out[0]["labels"] == {"application": "t--mux", "deployment": "Mux"}
    assert out[0]["points"][0][1] == pytest.approx(1 - 7 / 9)
    loads = query("model_loads", cluster=cluster, start=t0, end=t0 + timedelta(minutes=2), step=120, now=timezone.now())
    assert loads[0]["points"][0][1] == pytest.approx(7 / 2)  # per minute
    lat = query(
        "model_load_latency_ms", cluster=cluster, start=t0, end=t0 + timedelta(minutes=2), step=120, now=timezone.now()
    )
    p50 = next(s for s in lat if s["labels"]["quantile"] == "p50")["points"][0][1]
    assert p50 == pytest.approx(_quantile(0.5, [(10, 4), (100, 6), (float("inf"), 7)]))
    assert 0 < p50 <= 10


def test_quantile_matches_prometheus():
    assert _quantile(0.5, [(1.0, 0), (2.0, 10), (float("inf"), 10)]) == pytest.approx(1.5)
    assert _quantile(0.95, [(10.0, 0), (float("inf"), 5)]) == 10.0
    assert _quantile(0.5, []) is None


def test_rollups_make_long_ranges_cheap(cluster, fake):
    now = timezone.now().replace(second=0, microsecond=0)
    series = Series.objects.create(
        cluster=cluster,
        name="ray_resources",
        labels={"Name": "GPU", "State": "USED", "NodeAddress": "n"},
        key="k",
        kind="gauge",
    )
    Point.objects.bulk_create(
        Point(series=series, ts=now - timedelta(seconds=15 * i), value=i % 4) for i in range(1, 241)
    )
    made = services.rollup(Point.MINUTE, lookback=timedelta(hours=1), now=now)
    assert made == 60 and Point.objects.filter(resolution=60).count() == 60
    assert Point.objects.get(resolution=60, ts=now - timedelta(minutes=1)).value == pytest.approx(1.5)
    assert services.rollup(Point.MINUTE, lookback=timedelta(hours=1), now=now) == 60  # idempotent
    assert Point.objects.filter(resolution=60).count() == 60
    services.rollup(Point.HOUR, lookback=timedelta(hours=2), now=now.replace(minute=0) + timedelta(hours=1))
    old = Point.objects.create(series=series, ts=now - timedelta(days=2), value=1)
    services.enforce_retention(now=now)
    assert not Point.objects.filter(pk=old.pk).exists()
    month = query("gpu_allocated", cluster=cluster, start=now - timedelta(days=30), end=now, step=3600, now=now)
    assert month and len(month[0]["points"]) <= 720


def test_metrics_api(cluster, fake, api, alice, team_a, grant, monkeypatch):
    from apps.applications.services import application_create

    grant(team_a, cluster, "4")
    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="mux",
        spec={
            "route_prefix": "/team-a/mux",
            "import_path": "examples.multiplexed:app",
            "deployments": [{"name": "Mux"}],
        },
    )
    t0 = timezone.now() - timedelta(minutes=5)
    type(app).objects.filter(pk=app.pk).update(created_at=t0 - timedelta(minutes=1))  # the app ran before its series
    fake["a"] = exposition(0, 0).replace("t--mux", app.serve_name)
    scrape(cluster, ["a"], t0)
    fake["a"] = exposition(10, 4).replace("t--mux", app.serve_name)
    scrape(cluster, ["a"], t0 + timedelta(seconds=15))
    client = api(alice)
    resp = client.get(
        f"/api/v1/metrics/?series=cache_hit_rate&application={app.pk}&start={int(t0.timestamp())}&step=600"
    )
    assert resp.status_code == 200, resp.content
    assert resp.json()["series"][0]["points"][0][1] == pytest.approx(0.6)
    # the page's chart reads the same ratio as a percentage, on a 0-100 axis (the API keeps the ratio)
    from django.test import Client

    from apps.dashboard.pages import charts

    ratio = [{"labels": {"application": app.serve_name}, "points": [(timezone.now().timestamp(), 0.6)]}]
    monkeypatch.setattr(charts, "query", lambda *a, **k: ratio)
    page = Client()
    page.force_login(alice)
    chart = page.get(f"/charts/?series=cache_hit_rate&application={app.pk}&range=1h").content.decode()
    spec = json.loads(chart[chart.index('type="application/json">') + 24 : chart.index("</script>")])
    assert spec["unit"] == "%" and spec["ymax"] == 100
    assert [p["y"] for p in spec["datasets"][0]["data"] if p["y"] is not None] == [pytest.approx(60)]
    assert client.get("/api/v1/metrics/?series=nope&cluster=1").status_code == 400
    assert client.get(f"/api/v1/metrics/?series=gpu_allocated&cluster={cluster.pk}&step=0").status_code == 400
    assert client.get(f"/api/v1/metrics/?series=cache_hit_rate&application={app.pk}&start=yesterday").status_code == 400


def test_catalog_reaches_user_config_and_checks_input(cluster, api, alice, bob, team_a, team_b, grant):
    from apps.applications.services import application_create

    grant(team_a, cluster, "4")
    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="mux",
        spec={
            "route_prefix": "/team-a/mux",
            "import_path": "examples.multiplexed:app",
            "deployments": [{"name": "Mux", "user_config": {"greeting": "x"}}],
        },
    )
    client = api(alice)
    body = {
        "application": app.pk,
        "deployment": "Mux",
        "model_id": "m1",
        "uri": "s3://models/m1.npy",
        "size_bytes": 1024,
    }
    assert client.post("/api/v1/models/", body, format="json").status_code == 201
    cfg = build_serve_config(cluster).config["applications"][0]["deployments"][0]["user_config"]
    assert cfg == {"greeting": "x", "models": {"m1": "s3://models/m1.npy"}}
    dup = client.post("/api/v1/models/", body, format="json")
    assert dup.status_code == 400 and "already" in dup.json()["model_id"][0]
    bad = client.post(
        "/api/v1/models/", {**body, "model_id": "m2", "uri": "http://evil/x", "deployment": "Nope"}, format="json"
    )
    assert bad.status_code == 400 and {"uri", "deployment"} <= set(bad.json())
    assert api(bob).post("/api/v1/models/", {**body, "model_id": "m3"}, format="json").status_code == 400
    assert api(bob).get("/api/v1/models/").json()["count"] == 0


def test_team_allocation_and_gpu_hours_showback(cluster, fake, alice, team_a, grant, settings):
    from apps.applications.services import application_create

    grant(team_a, cluster, "4")
    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="web",
        spec={
            "route_prefix": "/team-a/web",
            "import_path": "examples.hello:app",
            "deployments": [{"name": "Hello"}],
        },
    )
    app.status = {
        "deployments": {
            "Hello": {
                "required_resources": {"GPU": 0.5},
                "replicas": [
                    {"state": "RUNNING", "node_id": "node-aaaaaaaaaaaa"},
                    {"state": "RUNNING", "node_id": "node-bbbbbbbbbbbb"},
                    {"state": "STARTING"},
                ],
            }
        }
    }
    app.save()
    cluster.nodes = [
        {"node_id": n, "state": "ALIVE"} for n in ("node-aaaaaaaaaaaa", "node-bbbbbbbbbbbb", "node-cccccccc")
    ]
    cluster.save()
    settings.SCRAPE_INTERVAL_S = 60
    t0 = timezone.now().replace(hour=1, minute=0, second=0, microsecond=0)
    for i in range(60):  # one hour of scrapes, one a minute
        services.scrape_cluster(cluster.pk, targets=[], now=t0 + timedelta(minutes=i))
    alloc = query(
        "team_gpus_allocated",
        cluster=cluster,
        start=t0,
        end=t0 + timedelta(hours=1),
        step=3600,
        now=t0 + timedelta(hours=1),
        team="team-a",
    )
    assert alloc[0]["points"][0][1] == pytest.approx(1.0)  # two running replicas x 0.5 GPU
    hours = query(
        "gpu_hours",
        cluster=cluster,
        start=t0,
        end=t0 + timedelta(hours=1),
        step=3600,
        now=t0 + timedelta(hours=1),
        team="team-a",
    )
    assert hours[0]["labels"]["application"] == app.serve_name
    assert hours[0]["points"][0][1] == pytest.approx(1.0)  # 1 GPU for one hour
    end = t0 + timedelta(hours=1)
    per_node = query("gpu_allocated", cluster=cluster, start=t0, end=end, step=3600, now=end)
    assert {s["labels"]["node"]: s["points"][0][1] for s in per_node} == {
        "node-aaaaaaa": 0.5,
        "node-bbbbbbb": 0.5,
        "node-ccccccc": 0.0,
    }


def test_a_configured_target_list_replaces_discovery(cluster, fake):
    fake["10.0.0.9:8080"] = exposition(1, 1)
    MetricsConfig.objects.filter(pk=cluster.pk).update(metrics_targets=["10.0.0.9:8080"])
    run = services.scrape_cluster(cluster.pk)
    assert run.targets == 1 and run.targets_failed == 0 and not run.errors


class _RayLikeCollector:
    """A collector as Ray's metrics agent registers one (no described names): the wanted families among many that
    nobody charts, as on a worker node's page."""

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        requests = CounterMetricFamily("ray_serve_num_http_requests", "req", labels=["application", "route"])
        requests.add_metric(["t--a", "/a"], 7)
        yield requests
        latency = HistogramMetricFamily("ray_serve_http_request_latency_ms", "lat", labels=["application"])
        latency.add_metric(["t--a"], [("10.0", 3), ("+Inf", 7)], 120.0)
        yield latency
        resources = GaugeMetricFamily("ray_resources", "res", labels=["Name", "State", "NodeAddress"])
        resources.add_metric(["GPU", "USED", "10.0.0.2"], 1.5)
        yield resources
        for n in range(300):
            noise = HistogramMetricFamily(f"ray_serve_long_poll_latency_{n}_ms", "noise", labels=["key"])
            noise.add_metric(["k"], [(str(b), b) for b in range(1, 20)] + [("+Inf", 20)], 5.0)
            yield noise


@pytest.fixture
def rays_exporter():
    """A metrics endpoint served by prometheus_client's own WSGI app, the one Ray's metrics agent serves; yields its
    address and what crossed the wire (each answer's bytes and encoding)."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    registry = CollectorRegistry()
    registry.register(_RayLikeCollector())
    exporter = make_wsgi_app(registry)
    wire: list[tuple[int, str]] = []

    def counted(environ, start_response):
        seen = {}

        def start(status, headers, *rest):
            seen.update(headers)
            return start_response(status, headers, *rest)

        body = b"".join(exporter(environ, start))
        wire.append((len(body), seen.get("Content-Encoding", "")))
        return [body]

    server = make_server("127.0.0.1", 0, counted, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}", wire
    server.shutdown()


def test_pages_cross_the_wire_gzipped_and_parse_the_same(rays_exporter):
    target, wire = rays_exporter
    plain = prometheus.fetch(target, gzip=False)
    packed = prometheus.fetch(target)  # the default
    assert packed == plain
    (plain_bytes, plain_encoding), (packed_bytes, packed_encoding) = wire
    assert (plain_encoding, packed_encoding) == ("", "gzip")
    assert plain_bytes == len(plain.encode()) and packed_bytes * 10 < plain_bytes, (plain_bytes, packed_bytes)
    wanted = set(services.FAMILIES)
    kept = services._normalise(list(prometheus.parse(packed, wanted)))
    assert {name for name, _ in kept} == {
        "ray_serve_num_http_requests",
        "ray_serve_http_request_latency_ms_bucket",
        "ray_resources",
    }


def test_a_compressed_page_is_bounded_by_its_text_not_its_wire_size(rays_exporter):
    target, wire = rays_exporter
    size = len(prometheus.fetch(target, gzip=False))
    with pytest.raises(prometheus.ScrapeError, match="larger than"):
        prometheus.fetch(target, max_bytes=size // 4)  # on the wire the page is far below the limit
    assert wire[-1][1] == "gzip" and wire[-1][0] < size // 4


def test_a_scrape_asks_for_gzip_unless_told_not_to(cluster, monkeypatch, settings):
    asked = []

    def fetch(target: str, timeout: float = 5, gzip: bool = True) -> str:
        asked.append(gzip)
        return exposition(1, 1)

    monkeypatch.setattr(prometheus, "fetch", fetch)
    services.scrape_cluster(cluster.pk, targets=["a:1"])
    settings.METRICS_SCRAPE_GZIP = False
    services.scrape_cluster(cluster.pk, targets=["a:1"])
    assert asked == [True, False]
