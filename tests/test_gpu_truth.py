"""GPU truth without Ray (issue 28): the per-card view from the dashboard's node summary as Ray 2.60 wrote it
(``tests/data/ray_node_summary_gpus.json``, recorded from a Ray node reading a fake NVML), joined with Serve's
replicas; what the control plane records per app; a node whose GPUs are logical records nothing. The same on real
Ray, from both metric sources: ``tests/e2e/test_gpu_truth_ray.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apps.applications.models import Application
from apps.applications.services import application_create
from apps.metrics import gpus
from apps.metrics.models import MetricsConfig
from apps.metrics.services import _app_gpu_use
from tests.conftest import app_body

pytestmark = pytest.mark.django_db

RECORDED = json.loads((Path(__file__).parent / "data" / "ray_node_summary_gpus.json").read_text())["node"]
REAL_NODE = RECORDED["raylet"]["nodeId"]
LOGICAL_NODE = "f" * 56


class Dashboard:
    """The dashboard client's one call the view makes, answering as Ray did (plus a node with logical GPUs)."""

    def node_summary(self) -> list[dict]:
        return [RECORDED, {"ip": "192.0.2.3", "raylet": {"nodeId": LOGICAL_NODE}, "gpus": []}]


def deploy(alice, team, cluster, name: str, gpus: float, replicas: list[tuple[str, int]]) -> Application:
    body = app_body(team.slug, cluster.pk, name)
    body["deployments"][0]["ray_actor_options"]["num_gpus"] = gpus
    spec = {k: v for k, v in body.items() if k not in ("team", "cluster", "name")}
    app = application_create(actor=alice, team=team, cluster=cluster, name=name, spec=spec)
    status = {
        "status": "RUNNING",
        "deployments": {
            "Hello": {
                "required_resources": {"CPU": 0.1, "GPU": gpus},
                "replicas": [
                    {"replica_id": f"{name}-{i}", "node_id": node, "pid": pid, "state": "RUNNING"}
                    for i, (node, pid) in enumerate(replicas)
                ],
            }
        },
    }
    Application.objects.filter(pk=app.pk).update(status=status, state="running")
    return app


def test_each_process_on_a_card_is_named_by_its_replica_and_logical_nodes_record_nothing(
    make_cluster, team_a, team_b, grant, alice, bob
):
    cluster = make_cluster(gpus="4")
    grant(team_a, cluster, "2")
    grant(team_b, cluster, "2")
    big = deploy(alice, team_a, cluster, "big", 0.25, [(REAL_NODE, 22021)])
    small = deploy(bob, team_b, cluster, "small", 0.5, [(REAL_NODE, 22061), (REAL_NODE, 22065)])
    elsewhere = deploy(alice, team_a, cluster, "elsewhere", 0.5, [(LOGICAL_NODE, 999)])

    snapshot = gpus.refresh(cluster, Dashboard())
    assert [(g["index"], g["memory_used_mib"], g["memory_total_mib"]) for g in snapshot] == [
        (0, 69932, 81559),
        (1, 4096, 81559),
    ]
    rows = {
        (g["index"], p["application_id"], p["memory_mib"], p["utilization"]) for g in snapshot for p in g["processes"]
    }
    assert rows == {(0, big.pk, 61440, 35), (0, small.pk, 8192, 12), (1, small.pk, 4096, 3)}
    flagged = [p for g in snapshot for p in g["processes"] if p["over_allocation"]]
    assert [(p["application_id"], p["card_share"]) for p in flagged] == [(big.pk, round(61440 / 81559, 4))]
    assert MetricsConfig.objects.get(pk=cluster.pk).gpus == snapshot

    recorded = {
        (labels["application"], name): v for (name, _), (_, labels, v) in _app_gpu_use(cluster, snapshot).items()
    }
    assert recorded == {
        (big.serve_name, "cp_app_gpu_memory_mib"): 61440,
        (big.serve_name, "cp_app_gpu_utilization"): 35,
        (small.serve_name, "cp_app_gpu_memory_mib"): 12288,
        (small.serve_name, "cp_app_gpu_utilization"): 15,
    }  # "elsewhere" runs on logical GPUs: no verdict of 0% from NVML's silence
    assert elsewhere.serve_name not in {a for a, _ in recorded}


def test_a_dashboard_that_does_not_answer_keeps_the_last_reading_and_says_why(make_cluster, team_a, alice):
    cluster = make_cluster(gpus="4")

    class Down:
        def node_summary(self) -> list[dict]:
            raise OSError("connection refused")

    MetricsConfig.objects.filter(pk=cluster.pk).update(gpus=[{"node_id": "n", "processes": []}])
    assert gpus.refresh(cluster, Down()) is None
    config = MetricsConfig.objects.get(pk=cluster.pk)
    assert config.gpus == [{"node_id": "n", "processes": []}] and "connection refused" in config.gpus_error
