"""The Prometheus metric source without Ray: cluster fields through the API, the client's credentials, and what a
page shows when the query endpoint is down or slow. Real HTTP servers stand in for the endpoint here; the real
Prometheus reading real Ray is in tests/e2e/test_prometheus_ray.py."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache
from django.test import Client

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from apps.metrics import prom
from apps.metrics.models import MetricsConfig
from tests.conftest import require
from tests.support.prometheus import Prometheus, backfill, binary
from workers.clients.promql import PromQLClient, PromQLError, selector

pytestmark = pytest.mark.django_db  # the cache, cleared around each test, may be the database's

CREDENTIAL = "prom-secret-token-9f8e7d6c5b4a"


class Endpoint:
    """A query endpoint that records each request's headers and answers what it is told (after a delay)."""

    def __init__(self, delay: float = 0.0, answer: dict | None = None, status: int = 200) -> None:
        self.requests: list[dict] = []
        outer = self
        self.delay, self.status = delay, status
        self.answer = answer or {"status": "success", "data": {"resultType": "matrix", "result": []}}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append({"path": self.path, "auth": self.headers.get("Authorization", "")})
                time.sleep(outer.delay)
                body = json.dumps(outer.answer).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_selector_quotes_label_values():
    assert selector({"ray_cluster": 'a"b\\c'}, {"application": "x"}) == '{application="x",ray_cluster="a\\"b\\\\c"}'


def test_the_credential_is_a_bearer_token_or_basic_auth_and_never_in_an_error():
    ep = Endpoint(status=401, answer={"status": "error", "error": "unauthorized"})
    try:
        with pytest.raises(PromQLError) as err:
            PromQLClient(ep.url, credential=CREDENTIAL).query("up")
        assert ep.requests[-1]["auth"] == f"Bearer {CREDENTIAL}"
        assert CREDENTIAL not in str(err.value) and "credential" in str(err.value)
        with pytest.raises(PromQLError):
            PromQLClient(ep.url, credential="ops:" + CREDENTIAL).query("up")
        assert ep.requests[-1]["auth"] == "Basic " + base64.b64encode(f"ops:{CREDENTIAL}".encode()).decode()
    finally:
        ep.close()


def test_a_refused_query_names_prometheus_reason():
    ep = Endpoint(status=400, answer={"status": "error", "errorType": "bad_data", "error": "parse error at char 3"})
    try:
        with pytest.raises(PromQLError, match="refused the query: parse error at char 3"):
            PromQLClient(ep.url).query("up{")
    finally:
        ep.close()


def test_cluster_api_sets_the_source_and_keeps_the_credential_write_only(staff, api):
    client = api(staff)
    base = {"name": "prom", "dashboard_url": "http://127.0.0.1:8265"}
    missing = client.post("/api/v1/clusters/", {**base, "metrics_source": "prometheus"}, format="json")
    assert missing.status_code == 400 and "prometheus_url" in missing.json()
    bad = client.post(
        "/api/v1/clusters/",
        {**base, "metrics_source": "prometheus", "prometheus_url": "http://p:9090", "prometheus_matchers": {"1x": "a"}},
        format="json",
    )
    assert bad.status_code == 400 and "not a Prometheus label name" in json.dumps(bad.json()["prometheus_matchers"])
    not_object = client.post("/api/v1/clusters/", {**base, "prometheus_matchers": ["a"]}, format="json")
    assert not_object.status_code == 400 and "prometheus_matchers" in not_object.json()
    assert not Cluster.objects.exists()  # nothing was stored by the refusals
    ok = client.post(
        "/api/v1/clusters/",
        {
            **base,
            "metrics_source": "prometheus",
            "prometheus_url": "http://prometheus:9090",
            "prometheus_matchers": {"ray_cluster": "prod-a"},
            "prometheus_credential": CREDENTIAL,
        },
        format="json",
    )
    assert ok.status_code == 201, ok.content
    body = ok.json()
    assert body["metrics_source"] == "prometheus" and body["prometheus_matchers"] == {"ray_cluster": "prod-a"}
    assert body["has_prometheus_credential"] is True and CREDENTIAL not in ok.content.decode()
    stored = Cluster.objects.get()
    assert stored.metrics_config.prometheus_credential == CREDENTIAL
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT prometheus_credential FROM metrics_metricsconfig WHERE cluster_id = %s", [stored.pk])
        assert CREDENTIAL not in cur.fetchone()[0]
    back = client.patch(
        f"/api/v1/clusters/{stored.pk}/",
        {"metrics_source": "embedded", "prometheus_credential": CREDENTIAL + "2"},
        format="json",
    )
    assert back.status_code == 200 and back.json()["metrics_source"] == "embedded"
    audit = json.dumps(list(AuditEvent.objects.values("before", "after")), default=str)
    assert CREDENTIAL not in audit and '"prometheus_credential": "[redacted]"' in audit
    for url in (f"/api/v1/clusters/{stored.pk}/", "/api/v1/audit-events/"):
        assert CREDENTIAL not in client.get(url).content.decode()


def test_an_unreachable_endpoint_gives_an_empty_chart_with_the_reason_and_the_page_still_renders(
    staff, make_cluster, settings
):
    settings.PROMETHEUS_TIMEOUT_S = 1
    slow = Endpoint(delay=3)
    try:
        cluster = make_cluster(name="slow")
        MetricsConfig.objects.filter(pk=cluster.pk).update(metrics_source="prometheus", prometheus_url=slow.url)
        client = Client()
        client.force_login(staff)
        started = time.monotonic()
        first = client.get(f"/charts/?series=gpu_utilization&cluster={cluster.pk}")
        assert first.status_code == 200
        text = first.content.decode()
        assert "source-unavailable" in text and "did not answer within 1 s" in text and "from Prometheus" in text
        # The next chart of the page does not wait again: the failure is remembered for a short while.
        second = client.get(f"/charts/?series=requests&cluster={cluster.pk}")
        assert second.status_code == 200 and "did not answer within 1 s" in second.content.decode()
        assert time.monotonic() - started < 2.8
        assert len(slow.requests) == 1
        page = client.get(f"/clusters/{cluster.pk}/")
        assert page.status_code == 200 and "Prometheus at" in page.content.decode()
        status = client.get(f"/clusters/{cluster.pk}/metrics-source/").content.decode()
        assert "Not answering" in status and "did not answer within 1 s" in status
        source = MetricsConfig.objects.get(pk=cluster.pk)
        assert "did not answer" in source.metrics_error and source.metrics_answered_at is None
        api = client.get(f"/api/v1/metrics/?series=requests&cluster={cluster.pk}")
        assert api.status_code == 503 and "did not answer" in api.json()["detail"]
        # The control plane's own series stay in its database and still answer.
        own = client.get(f"/charts/?series=gpu_allocated&cluster={cluster.pk}")
        assert own.status_code == 200
    finally:
        slow.close()
    cache.clear()
    gone = client.get(f"/charts/?series=requests&cluster={cluster.pk}").content.decode()
    assert "is unreachable" in gone


def test_queries_carry_the_matchers_and_answers_are_cached(staff, make_cluster):
    ep = Endpoint(
        answer={
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [{"metric": {"application": "t--a"}, "values": [[1700000060, "2.5"], [1700000120, "NaN"]]}],
            },
        }
    )
    try:
        cluster = make_cluster(name="m")
        MetricsConfig.objects.filter(pk=cluster.pk).update(
            metrics_source="prometheus", prometheus_url=ep.url, prometheus_matchers={"ray_cluster": "prod-a"}
        )
        client = Client()
        client.force_login(staff)
        resp = client.get(f"/api/v1/metrics/?series=requests&cluster={cluster.pk}&start=1700000000&end=1700000600")
        assert resp.status_code == 200, resp.content
        assert resp.json()["series"] == [
            {"labels": {"application": "t--a"}, "points": [[1700000045, 2.5]]}
        ]  # drawn at the bucket start (step 15)
        from urllib.parse import parse_qs, urlparse

        asked = parse_qs(urlparse(ep.requests[0]["path"]).query)
        assert 'ray_cluster="prod-a"' in asked["query"][0] and "ray_serve_num_http_requests_total" in asked["query"][0]
        client.get(f"/api/v1/metrics/?series=requests&cluster={cluster.pk}&start=1700000000&end=1700000600")
        assert len(ep.requests) == 1  # the second came from the cache
        source = MetricsConfig.objects.get(pk=cluster.pk)
        assert source.metrics_answered_at is not None and source.metrics_error == ""
    finally:
        ep.close()


def test_a_prometheus_cluster_scrape_samples_only_the_control_planes_own_series(make_cluster):
    from apps.metrics.models import Series
    from apps.metrics.services import scrape_cluster

    cluster = make_cluster(name="own")
    Cluster.objects.filter(pk=cluster.pk).update(nodes=[{"node_id": "a" * 56, "state": "ALIVE"}])
    MetricsConfig.objects.filter(pk=cluster.pk).update(
        metrics_source="prometheus",
        prometheus_url="http://127.0.0.1:9",
        metrics_targets=["127.0.0.1:9"],  # would fail if it were scraped
    )
    run = scrape_cluster(cluster.pk)
    assert run is not None and run.targets == 0 and not run.errors
    names = set(Series.objects.filter(cluster=cluster).values_list("name", flat=True))
    assert names and all(n.startswith("cp_") for n in names)


def test_window_sums_read_vectors():
    ep = Endpoint(
        answer={
            "status": "success",
            "data": {"resultType": "vector", "result": [{"metric": {"application": "a"}, "value": [1, "12"]}]},
        }
    )
    try:
        c = Cluster(pk=999, name="v")
        c.metrics_config = MetricsConfig(metrics_source="prometheus", prometheus_url=ep.url)
        from django.utils import timezone

        assert prom.window_sums(c, prom.HTTP_REQUESTS, 300, timezone.now(), ("application",)) == {("a",): 12.0}
    finally:
        ep.close()


class Answers(Endpoint):
    """An endpoint answering instant queries by what they ask: the rule's request counts, and since when the
    cluster's targets have been scraped."""

    def __init__(self, requests_seen: float, covered_since: float) -> None:
        super().__init__()
        self.values = {"ray_serve_num_http_requests_total": requests_seen, "timestamp(up": covered_since}
        outer = self
        handler = self.server.RequestHandlerClass
        original = handler.do_GET

        def do_get(h) -> None:
            from urllib.parse import parse_qs, urlparse

            expr = parse_qs(urlparse(h.path).query).get("query", [""])[0]
            hit = next((v for k, v in outer.values.items() if k in expr), None)
            result = [] if hit is None else [{"metric": {"application": outer.app}, "value": [time.time(), str(hit)]}]
            outer.answer = {"status": "success", "data": {"resultType": "vector", "result": result}}
            original(h)

        handler.do_GET = do_get
        self.app = ""


def test_idle_gpu_alerts_read_a_prometheus_cluster_and_draw_no_verdict_when_it_is_down(
    alice, team_a, make_cluster, grant, settings
):
    from apps.alerts import services as alerts
    from apps.alerts.models import AlertRule, Incident
    from tests.test_alerts import make_app, set_state

    alerts.ensure_default_rules()
    cluster = make_cluster(name="promc")
    grant(team_a, cluster, "4")
    app = make_app(alice, team_a, cluster)
    set_state(app, "running", deployed=time.time() - 7200)
    AlertRule.objects.create(kind="idle_gpu", team=team_a, params={"window_s": 600, "max_requests": 0})
    ep = Answers(requests_seen=0, covered_since=time.time() - 3600)
    ep.app = app.serve_name
    try:
        MetricsConfig.objects.filter(pk=cluster.pk).update(metrics_source="prometheus", prometheus_url=ep.url)
        alerts.evaluate()
        incident = Incident.objects.get(application=app, kind="idle_gpu", state="open")
        assert incident.evidence["requests"] == 0 and incident.evidence["gpus"] == 0.5
        from urllib.parse import unquote_plus

        assert any("increase(ray_serve_num_http_requests_total" in unquote_plus(r["path"]) for r in ep.requests)
        ep.values["ray_serve_num_http_requests_total"] = 40  # traffic: the incident resolves
        cache.clear()
        alerts.evaluate()
        incident.refresh_from_db()
        assert incident.state == "resolved"
        # Prometheus has only just started scraping the cluster: no verdict, nothing opens.
        Incident.objects.all().delete()
        ep.values.update({"ray_serve_num_http_requests_total": 0, "timestamp(up": time.time() - 60})
        cache.clear()
        alerts.evaluate()
        assert not Incident.objects.filter(kind="idle_gpu").exists()
    finally:
        ep.close()
    cache.clear()
    alerts.evaluate()  # the endpoint is gone: no verdict either
    assert not Incident.objects.filter(kind="idle_gpu").exists()


def test_a_counter_missed_at_the_window_start_counts_its_growth_and_one_born_inside_counts_whole(tmp_path):
    """Real Prometheus, fed recorded samples (promtool): one series has a 2-minute hole across the window's start
    (its target was down: no sample within the lookback there), one is born inside the window. The first grew by
    about 18 in the window, and must not be counted from zero as if newborn (80); the second counts whole."""
    if not binary():
        require("prometheus", "apt-get install prometheus")
    step, window = 15, 300
    start = (int(time.time()) - 3600) // 60 * 60  # the window's start, an hour ago
    end = start + window
    lines = ["# TYPE ray_serve_num_http_requests counter"]
    for k in range(81):  # every 15 s from start - 900 to end, one request each, none from start - 90 to start + 30
        t = start - 900 + step * k
        if not start - 90 <= t < start + 30:
            lines.append(f'ray_serve_num_http_requests_total{{application="holey",ray_cluster="t"}} {k} {t}')
    for k in range(17):  # first sample at start + 60 with 5 already served, then one request every 15 s
        t = start + 60 + step * k
        lines.append(f'ray_serve_num_http_requests_total{{application="newborn",ray_cluster="t"}} {5 + k} {t}')
    text = tmp_path / "samples.om"
    text.write_text("\n".join(lines) + "\n# EOF\n")
    backfill(text, tmp_path / "data")
    server = Prometheus(tmp_path, data=tmp_path / "data").start()
    try:
        c = Cluster(pk=998, name="holes")
        c.metrics_config = MetricsConfig(
            metrics_source="prometheus", prometheus_url=server.url, prometheus_matchers={"ray_cluster": "t"}
        )
        at = datetime.fromtimestamp(end, tz=UTC)
        got = prom.window_sums(c, prom.HTTP_REQUESTS, window, at, ("application",))
        # 18 requests between the first and last samples in the window; increase() extends that span to the
        # window's start by half an interval when the gap there is longer than 1.1 intervals: 18 * 277.5 / 270.
        assert got[("holey",)] == pytest.approx(18 * 277.5 / 270), got
        assert got[("newborn",)] == 21, got
    finally:
        server.stop()
