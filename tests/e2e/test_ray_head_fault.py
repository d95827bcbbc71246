"""The Ray head stopped in the middle of a push, then started again: nothing is lost and the reconcile
brings the new cluster to the desired state. Runs last: it replaces the shared test Ray cluster."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests

from apps.applications.models import Application
from apps.clusters.models import Cluster, SyncRun
from tests.conftest import app_body, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.stops_ray, pytest.mark.django_db(transaction=True)]


def _head_pids(temp_dir: str) -> list[int]:
    """The head's GCS server and dashboard: what stops answering when a head node dies."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace")
        except OSError:
            continue
        if temp_dir in cmdline and ("gcs_server" in cmdline or "dashboard/dashboard.py" in cmdline):
            pids.append(int(entry.name))
    return pids


def test_ray_head_stopped_mid_push_then_back(ray_env, ray_cluster, api, alice, team_a, grant):
    from workers.tasks.sync import reconcile_cluster

    grant(team_a, ray_env, "4")
    client = api(alice)
    first = client.post("/api/v1/applications/", app_body("team-a", ray_env.pk, "steady"), format="json").json()
    wait_for(lambda: Application.objects.get(pk=first["id"]).state == "running", what="first app RUNNING")

    # A second deploy: its PUT reaches Ray, and the head dies while Serve is still deploying it.
    second = client.post("/api/v1/applications/", app_body("team-a", ray_env.pk, "late"), format="json").json()

    def late_pushed() -> bool:
        runs = SyncRun.objects.filter(cluster=ray_env, state="succeeded").values_list("config_snapshot", flat=True)
        return any(a["name"] == "team-a--late" for snapshot in runs for a in snapshot.get("applications", []))

    wait_for(late_pushed, what="the second push sent")
    for pid in _head_pids(ray_cluster.temp_dir):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not ray_cluster.is_up(), timeout=30, what="the dashboard gone")

    third = client.post("/api/v1/applications/", app_body("team-a", ray_env.pk, "during"), format="json")
    assert third.status_code == 201  # writes keep landing while the head is down
    wait_for(lambda: Cluster.objects.get(pk=ray_env.pk).health == "unreachable", what="cluster marked unreachable")
    assert Application.objects.filter(team=team_a, deleted_at__isnull=True).count() == 3

    ray_cluster.stop()  # what is left of the old cluster
    ray_cluster.start(log=lambda m: None)  # a new head and workers: Serve starts empty
    reconcile_cluster.delay(ray_env.pk)  # what beat does every RECONCILE_INTERVAL_S

    def converged() -> bool:
        apps = (
            requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=10).json().get("applications")
            or {}
        )
        return {"team-a--steady", "team-a--late", "team-a--during"} <= {
            n for n, a in apps.items() if a.get("status") == "RUNNING"
        }

    wait_for(converged, timeout=180, what="all three apps RUNNING on the new cluster")
    assert requests.get(f"{ray_cluster.serve_url}/team-a/during", timeout=10).status_code == 200
    assert second["id"] and Application.objects.get(pk=second["id"]).deleted_at is None
