"""GPU truth on a real Ray node whose NVML is replaced at its import seam (issue 28).

A fresh local cluster (a head and one worker with 2 GPUs) starts with ``tests/support/fake_nvml`` first on its
PYTHONPATH: Ray's own reporter (``ray/dashboard/modules/reporter``) then reads GPUs and processes from a JSON file
the test writes, so the exposition text, names, labels and units, and the dashboard's node summary, are exactly what
Ray 2.60 writes. Two teams' fractional-GPU apps run on it; the fake says what their replica processes hold. The
control plane's figures per app, per GPU and per team must equal the injected values, from the embedded store and
from a real Prometheus; a team sees only its own processes; an app that holds memory at 0% utilisation is idle.
"""

from __future__ import annotations

import json
import os
import time
from datetime import timedelta

import pytest
import requests
from django.test import Client
from django.utils import timezone

from apps.alerts import services as alerts
from apps.alerts.models import AlertRule, Incident
from apps.alerts.waste import compute
from apps.applications.models import Application
from apps.deploys.observe import observe_cluster
from apps.localdev.local_ray import ROOT, LocalRayCluster
from apps.metrics.models import MetricsConfig
from apps.metrics.services import scrape_cluster
from apps.metrics.sources import query
from tests.conftest import PASSWORD, app_body, require, wait_for
from tests.support.prometheus import Prometheus, binary

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

FAKE_NVML = ROOT / "tests" / "support" / "fake_nvml"
H100_MIB = 81559  # what NVML reports for an H100 80GB HBM3


@pytest.fixture
def gpu_ray(tmp_path):
    fake = tmp_path / "nvml.json"
    fake.write_text("{}")
    ray = LocalRayCluster(
        temp_dir="/tmp/ray-cp-gpu",
        gcs_port=6420,
        dashboard_port=8305,
        serve_port=8040,
        client_port=10041,
        node_port_base=28000,
        metrics_port_base=8390,
        workers=[{"num_cpus": 2, "num_gpus": 2, "resources": {}, "labels": {"pool": "a100"}}],
        env={"CP_FAKE_NVML": str(fake), "PYTHONPATH": os.pathsep.join([str(FAKE_NVML), str(ROOT)])},
    )
    ray.stop()
    ray.start(log=lambda m: None)
    try:
        yield ray, fake
    finally:
        ray.stop()


def spec(team: str, name: str, replicas: int, gpus: float) -> dict:
    return {
        "route_prefix": f"/{team}/{name}",
        "import_path": "examples.hello:build",
        "args": {"greeting": name},
        "deployments": [
            {"name": "Hello", "num_replicas": replicas, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}
        ],
    }


def pids(app_id: int) -> list[int]:
    app = Application.objects.get(pk=app_id)
    return sorted(r["pid"] for d in app.status["deployments"].values() for r in d["replicas"])


def worker_metrics(ray: LocalRayCluster) -> str:
    return requests.get(f"http://127.0.0.1:{ray.metrics_port_base + 1}/metrics", timeout=10).text


def ray_value(text: str, family: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def latest(series: list[dict], *keys: str) -> dict:
    return {tuple(s["labels"].get(k, "") for k in keys): s["points"][-1][1] for s in series if s["points"]}


def test_per_app_gpu_memory_and_use_match_what_nvml_says_on_both_sources(
    gpu_ray, celery_worker, make_cluster, team_a, team_b, grant, alice, bob, staff, api, tmp_path
):
    ray, fake = gpu_ray
    cluster = make_cluster(
        name="gpu-1",
        dashboard_url=ray.dashboard_url,
        serve_url=ray.serve_url,
        http_port=ray.serve_port,
        gcs_address=ray.gcs_address,
        gpus="2",
        inventoried=False,
    )
    grant(team_a, cluster, "1")
    grant(team_b, cluster, "1")
    big = api(alice).post(
        "/api/v1/applications/",
        {**app_body("team-a", cluster.pk, "big"), **spec("team-a", "big", 1, 0.25)},
        format="json",
    )
    small = api(bob).post(
        "/api/v1/applications/",
        {**app_body("team-b", cluster.pk, "small"), **spec("team-b", "small", 2, 0.5)},
        format="json",
    )
    assert big.status_code == 201 and small.status_code == 201, (big.content, small.content)
    big_id, small_id = big.json()["id"], small.json()["id"]

    def running() -> bool:
        observe_cluster(cluster.pk)
        return all(
            a.state == "running" and a.deployed_revision_id == a.current_revision_id
            for a in Application.objects.filter(pk__in=[big_id, small_id])
        )

    wait_for(running, timeout=240, what="both apps RUNNING")
    (big_pid,), (small_1, small_2) = pids(big_id), pids(small_id)

    # What the GPUs do, as NVML will tell Ray's reporter on the worker node.
    gpus = [
        {
            "index": 0,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-0a0a0a0a",
            "memory_total_mib": H100_MIB,
            "utilization": 62,
            "other_mib": 300,
            "processes": [
                {"pid": big_pid, "memory_mib": 61440, "sm": 35},  # 60 GiB on a 0.25 GPU allocation
                {"pid": small_1, "memory_mib": 8192, "sm": 12},
            ],
        },
        {
            "index": 1,
            "name": "NVIDIA H100 80GB HBM3",
            "uuid": "GPU-1b1b1b1b",
            "memory_total_mib": H100_MIB,
            "utilization": 4,
            "processes": [{"pid": small_2, "memory_mib": 4096, "sm": 3}],
        },
    ]
    port = str(ray.metrics_port_base + 1)
    fake.write_text(json.dumps({port: {"gpus": gpus}}))
    wait_for(
        lambda: (
            ray_value(
                worker_metrics(ray), "ray_component_gpu_memory_mb", Component="ray::ServeReplica:team-a--big:Hello"
            )
            == 61440
        ),
        timeout=60,
        what="Ray's reporter exporting the replicas' GPU memory",
    )
    text = worker_metrics(ray)
    # Ray's own names, labels and units: per process group in MiB, per GPU in MiB (declared bytes).
    assert ray_value(text, "ray_component_gpu_memory_mb", Component="ray::ServeReplica:team-b--small:Hello") == 12288
    assert ray_value(text, "ray_node_gram_used", GpuIndex="0", GpuUuid="GPU-0a0a0a0a") == 61440 + 8192 + 300

    for _ in range(3):
        assert scrape_cluster(cluster.pk) is not None
        time.sleep(2)

    # -- Which process holds how much of which card (the node summary, joined with Serve's replicas) ---------------
    snapshot = MetricsConfig.objects.get(pk=cluster.pk).gpus
    assert [(g["index"], g["memory_used_mib"], g["memory_total_mib"]) for g in snapshot] == [
        (0, 61440 + 8192 + 300, H100_MIB),
        (1, 4096, H100_MIB),
    ]
    held = {(g["index"], p["application"], p["memory_mib"], p["utilization"]) for g in snapshot for p in g["processes"]}
    assert held == {(0, "team-a--big", 61440, 35), (0, "team-b--small", 8192, 12), (1, "team-b--small", 4096, 3)}
    big_proc = next(p for p in snapshot[0]["processes"] if p["application"] == "team-a--big")
    assert (
        big_proc["allocated"] == 0.25
        and big_proc["over_allocation"]
        and big_proc["card_share"] == round(61440 / H100_MIB, 4)
    )
    assert not any(p["over_allocation"] for g in snapshot for p in g["processes"] if p["application"] != "team-a--big")

    # -- The compaction planner's input carries each card's memory and what each replica really holds -------------
    from apps.compaction.inputs import observe_for_plan

    _, plan_input = observe_for_plan(cluster)
    worker = next(n for n in plan_input["nodes"] if n.get("gpu_cards"))
    assert worker["gpu_cards"] == [H100_MIB, H100_MIB]
    memory = {(r["app"], r["card"], r["gpu_memory_mib"]) for r in plan_input["replicas"]}
    assert memory == {("team-a--big", 0, 61440), ("team-b--small", 0, 8192), ("team-b--small", 1, 4096)}

    # -- Per application, from the embedded store: Ray's memory series, the control plane's utilisation record ------
    now = timezone.now()
    window = {"start": now - timedelta(minutes=10), "end": now, "step": 15, "now": now}
    embedded_memory = latest(query("app_gpu_memory_mb", cluster=cluster, **window), "application")
    assert embedded_memory == {("team-a--big",): 61440, ("team-b--small",): 12288}
    utilisation = latest(query("app_gpu_utilization", cluster=cluster, **window), "application")
    assert utilisation == {("team-a--big",): 35, ("team-b--small",): 15}
    per_gpu = latest(query("gpu_memory_used_mb", cluster=cluster, **window), "GpuIndex")
    assert per_gpu == {("0",): 61440 + 8192 + 300, ("1",): 4096}

    # -- Tenancy: a team sees its own processes by name, the rest of each card only as memory ----------------------
    mine = api(alice).get(f"/api/v1/clusters/{cluster.pk}/gpus/").json()
    assert mine["real"] is True
    assert [[p["application"] for p in g["processes"]] for g in mine["gpus"]] == [["team-a--big"], []]
    assert [g["others_mib"] for g in mine["gpus"]] == [8192, 4096]
    assert "team-b--small" not in json.dumps(mine)
    everything = api(staff).get(f"/api/v1/clusters/{cluster.pk}/gpus/").json()
    assert sum(len(g["processes"]) for g in everything["gpus"]) == 3

    # -- Pages: the app page flags 60 GiB on a 0.25 allocation; the team sees its apps' use -----------------------
    browser = Client()
    assert browser.login(username="alice", password=PASSWORD)
    page = browser.get(f"/apps/{big_id}/").content.decode()
    assert "holds 75% of the card on a 0.25 GPU allocation" in page and "60.0" in page
    cluster_page = browser.get(f"/clusters/{cluster.pk}/").content.decode()
    assert "Other teams&#x27; replicas" in cluster_page or "Other teams' replicas" in cluster_page
    assert "team-b" not in cluster_page.split('id="gpu-truth"')[1].split("</section>")[0]
    team_page = browser.get("/teams/team-a/").content.decode()
    assert 'id="team-gpu-use"' in team_page and "60.0 GiB" in team_page

    # -- The same per-app memory from a real Prometheus scraping the same Ray ---------------------------------------
    if not binary():
        require("prometheus", "apt-get install prometheus")
    prometheus = Prometheus(tmp_path, dashboard_url=ray.dashboard_url, scrape_interval="2s").start()
    try:
        wait_for(lambda: prometheus.targets_up() >= 2, timeout=60, what="Prometheus scraping the GPU cluster")
        MetricsConfig.objects.filter(pk=cluster.pk).update(
            metrics_source="prometheus", prometheus_url=prometheus.url, prometheus_matchers={"ray_cluster": "cp-test"}
        )
        cluster.refresh_from_db()
        cluster.metrics_config.refresh_from_db()

        def from_prometheus() -> dict:
            at = timezone.now()
            w = {"start": at - timedelta(minutes=2), "end": at, "step": 15, "now": at}
            return latest(query("app_gpu_memory_mb", cluster=cluster, **w), "application")

        got = wait_for(lambda: from_prometheus() or None, timeout=60, what="the app series in Prometheus")
        assert got == embedded_memory, (got, embedded_memory)
        at = timezone.now()
        w = {"start": at - timedelta(minutes=2), "end": at, "step": 15, "now": at}
        assert latest(query("gpu_memory_used_mb", cluster=cluster, **w), "GpuIndex") == per_gpu
        one = query("app_gpu_memory_mb", cluster=cluster, application="team-a--big", **w)  # the app page's
        assert latest(one, "application") == {("team-a--big",): 61440}
        print(f"\nper-app GPU memory (MiB): embedded {embedded_memory}, Prometheus {got}; utilisation {utilisation}")
    finally:
        prometheus.stop()
        MetricsConfig.objects.filter(pk=cluster.pk).update(metrics_source="embedded", prometheus_url="")

    # -- An app that holds its memory at 0% utilisation is idle, whatever Ray's own utilisation series says ---------
    for g in gpus:
        for p in g["processes"]:
            if p["pid"] in (small_1, small_2):
                p["sm"] = 0
    fake.write_text(json.dumps({port: {"gpus": gpus}}))

    def small_at_zero() -> bool:
        summary = requests.get(f"{ray.dashboard_url}/nodes?view=summary", timeout=10).json()["data"]["summary"]
        procs = [p for n in summary for g in n.get("gpus") or [] for p in g.get("processesPids") or []]
        return any(procs) and all(p["gpuUtilization"] == 0 for p in procs if p["pid"] in (small_1, small_2))

    wait_for(small_at_zero, timeout=30, what="NVML's new utilisation in the node summary")
    stale = ray_value(
        worker_metrics(ray), "ray_component_gpu_percentage", Component="ray::ServeReplica:team-b--small:Hello"
    )
    print(f"Ray's own ray_component_gpu_percentage for team-b--small at 0% (NVML): {stale}")
    AlertRule.objects.create(kind="idle_gpu", team=team_b, params={"window_s": 20, "max_utilization": 5})
    AlertRule.objects.create(kind="idle_gpu", team=team_a, params={"window_s": 20, "max_utilization": 5})
    started = time.monotonic()
    while time.monotonic() - started < 26:
        scrape_cluster(cluster.pk)
        time.sleep(3)
    alerts.ensure_default_rules()
    alerts.evaluate()
    idle = Incident.objects.get(kind="idle_gpu", application_id=small_id, state="open")
    assert idle.evidence["method"].startswith("utilisation") and idle.evidence["utilization"] == 0
    assert idle.evidence["memory_mib"] == 12288 and idle.evidence["gpus"] == 1.0
    assert "12.0 GiB" in idle.summary
    assert not Incident.objects.filter(kind="idle_gpu", application_id=big_id).exists()  # 35% busy: not idle

    # -- Showback: the week's report measures by utilisation where Ray reads the GPUs ------------------------------
    report = compute(team_a, timezone.now() - timedelta(hours=1), timezone.now())
    (row,) = report["applications"]
    assert row["method"] == "utilisation" and report["real_gpus"] is True
    assert row["gpu_memory_gib_hours"] > 0 and row["gpu_hours_used"] <= row["gpu_hours_allocated"]
