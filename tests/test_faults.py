"""Faults without Ray as the subject: a dashboard that is slow or answers garbage, the broker down while
writes arrive, a worker that died holding the cluster's lock. Nothing stored is lost in any of them."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from apps.applications.models import Application
from apps.clusters.models import Cluster, SyncRun
from apps.deploys.locks import acquire_lock
from apps.deploys.models import PushState
from apps.deploys.push import push_cluster
from tests.conftest import app_body
from workers.clients.ray_dashboard import RayUnavailable


class BadDashboard:
    """Answers PUT/GET /api/serve/applications/ slowly, with garbage, or with a 500, as told."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self) -> None:
                if outer.mode == "slow":
                    time.sleep(3)
                if outer.mode == "drip":  # one byte a second: each read is quick, the answer never ends in time
                    self.send_response(200)
                    self.send_header("Content-Length", "30")
                    self.end_headers()
                    for _ in range(30):
                        try:
                            self.wfile.write(b" ")
                            self.wfile.flush()
                        except OSError:
                            return
                        time.sleep(1)
                    return
                if outer.mode == "huge":  # 150 MiB, streamed
                    self.send_response(200)
                    self.end_headers()
                    chunk = b" " * 65536
                    try:
                        for _ in range(150 * 16):
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                code, body = {
                    "garbage": (200, b"<html>not json"),
                    "error": (503, b"upstream down"),
                    "slow": (200, b"{}"),
                    "weird": (200, b'{"applications": [1, 2]}'),
                }[outer.mode]
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _reply  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def app_on(make_cluster, alice, team_a, grant):
    def make(url: str) -> Cluster:
        from apps.applications.services import application_create

        cluster = make_cluster(name=f"c{abs(hash(url)) % 10000}", dashboard_url=url)
        grant(team_a, cluster, "4")
        application_create(
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
        return cluster

    return make


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("slow", "did not answer within 2 s"),
        ("drip", "did not answer within 2 s"),
        ("huge", "too much"),
        ("error", "HTTP 503"),
        ("garbage", "not JSON"),
    ],
)
def test_bad_dashboards_give_clear_sync_errors(app_on, settings, mode, expected):
    """A call to Ray has one total deadline (a dashboard dripping a byte a second held a 2 s call for 8 s) and reads
    a bounded answer (a 150 MiB answer grew the worker by 451 MiB)."""
    import resource

    settings.RAY_HTTP_TIMEOUT_S = 2
    settings.RAY_MAX_ANSWER_BYTES = 1024 * 1024
    dashboard = BadDashboard(mode)
    try:
        cluster = app_on(dashboard.url)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        with pytest.raises(RayUnavailable):
            push_cluster(cluster.pk)
        took = time.monotonic() - started
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert took < 4 * 2 + 2, f"{mode}: the push took {took:.1f} s"  # inventory, then the PUT: two calls at most
        assert grown_mib < 20, f"{mode}: the worker grew by {grown_mib:.0f} MiB"
        run = SyncRun.objects.get(cluster=cluster)
        assert run.state == "failed" and expected in run.error
        assert Cluster.objects.get(pk=cluster.pk).health == "unreachable"
        assert Application.objects.filter(cluster=cluster).count() == 1  # nothing the team stored is lost
    finally:
        dashboard.stop()


@pytest.mark.django_db
def test_unexpected_status_document_is_an_error_not_a_crash(app_on):
    dashboard = BadDashboard("weird")
    try:
        cluster = app_on(dashboard.url)
        from apps.deploys.observe import observe_cluster

        with pytest.raises(RayUnavailable, match="not an object"):
            observe_cluster(cluster.pk)
    finally:
        dashboard.stop()


@pytest.mark.django_db(transaction=True)
def test_writes_are_saved_while_the_broker_is_down(cluster, grant, team_a, api, alice, monkeypatch):
    """The publish fails as kombu fails when Redis is gone (the real outage is in test_faults_processes.py)."""
    from kombu.exceptions import OperationalError

    from workers.tasks.sync import sync_cluster

    grant(team_a, cluster, "4")

    attempts = []

    def broker_down(*args, **kwargs):
        attempts.append(args)
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(sync_cluster, "delay", broker_down)
    resp = api(alice).post("/api/v1/applications/", app_body("team-a", cluster.pk, "saved"), format="json")
    assert resp.status_code == 201, resp.content
    assert Application.objects.filter(name="saved").exists()
    c = Cluster.objects.select_related("push_state").get(pk=cluster.pk)
    assert c.desired_generation > c.push_state.pushed_generation  # the reconcile pushes it once the broker is back
    assert attempts == [(cluster.pk, "write")]  # the publish was tried, failed, and the write still landed


@pytest.mark.django_db
def test_a_dead_workers_lock_expires_and_the_work_is_done_once(cluster, settings):
    PushState.objects.filter(pk=cluster.pk).update(
        lock_owner="dead-worker", lock_expires_at=timezone.now() + timedelta(seconds=60)
    )
    assert acquire_lock(cluster_id=cluster.pk) is None  # still leased: nobody else pushes meanwhile
    assert push_cluster(cluster.pk).outcome == "locked"
    PushState.objects.filter(pk=cluster.pk).update(lock_expires_at=timezone.now() - timedelta(seconds=1))
    owner = acquire_lock(cluster_id=cluster.pk)
    assert owner is not None and acquire_lock(cluster_id=cluster.pk) is None
    assert json.dumps(PushState.objects.filter(pk=cluster.pk).values_list("lock_owner", flat=True)[0]) == json.dumps(
        owner
    )
