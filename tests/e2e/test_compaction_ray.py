"""Compaction against real Ray, as a new user meets it: a cluster registered with its dashboard URL only (no GCS
address), three GPU apps deployed through the API, and a plan made and executed right after Ray reports them
RUNNING, while clients call every app.

Each scenario gets a fresh local cluster (a head and three workers with 4 logical GPUs): a drained node stays
draining, so the shared test cluster cannot be reused. One runs Ray's default spread placement; the other runs
RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1 with Serve's own background compaction made eager
(RAY_SERVE_NODE_COMPACTION_DELAY_S=10), and a watcher records every PENDING_MIGRATION Serve shows, to prove the
control plane never drains while Serve migrates.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
import requests
from django.test import Client

from apps.applications.models import Application
from apps.compaction.models import CompactionPlan
from apps.deploys.observe import observe
from apps.localdev.local_ray import LocalRayCluster
from tests.conftest import app_body, wait_for, wait_for_every_proxy

pytestmark = [pytest.mark.ray, pytest.mark.drains_nodes, pytest.mark.django_db(transaction=True)]

APPS = {  # name: (replicas, GPUs per replica): 2.5 GPUs, so one worker can hold them all
    "llm": (2, 0.5),
    "embed": (2, 0.5),
    "rerank": (1, 0.5),
}


def fresh_cluster(env: dict[str, str]) -> LocalRayCluster:
    return LocalRayCluster(
        temp_dir="/tmp/ray-cp-compact",
        gcs_port=6410,
        dashboard_port=8295,
        serve_port=8030,
        client_port=10031,
        node_port_base=26000,
        metrics_port_base=8110,
        workers=[{"num_cpus": 4, "num_gpus": 4, "resources": {}, "labels": {"pool": "a100"}} for _ in range(3)],
        env=env,
    )


@pytest.fixture
def compaction_ray(request) -> Any:
    cluster = fresh_cluster(request.param)
    cluster.stop()
    cluster.start(log=lambda m: None)
    yield cluster
    cluster.stop()


def serve_apps(ray: LocalRayCluster) -> dict:
    return requests.get(f"{ray.dashboard_url}/api/serve/applications/", timeout=10).json().get("applications") or {}


def worker_ids(ray: LocalRayCluster) -> list[str]:
    nodes = requests.get(f"{ray.dashboard_url}/api/v0/nodes?limit=100", timeout=10).json()["data"]["result"]["result"]
    return sorted(n["node_id"] for n in nodes if not n["is_head_node"] and n["state"] == "ALIVE")


def replicas(apps: dict) -> list[dict]:
    return [
        dict(r, key=f"{a}/{d}")
        for a, app in apps.items()
        for d, dep in (app.get("deployments") or {}).items()
        for r in dep.get("replicas") or []
    ]


class Traffic:
    """Clients calling every app in a loop; counts answers."""

    def __init__(self, ray: LocalRayCluster, routes: list[str]) -> None:
        self.ray, self.routes = ray, routes
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        session = requests.Session()
        while not self.stop_event.is_set():
            for route in self.routes:
                try:
                    r = session.get(f"{self.ray.serve_url}{route}", timeout=10)
                    good = r.status_code == 200
                    if not good:
                        self.errors.append(f"{route}: HTTP {r.status_code}")
                except requests.RequestException as exc:
                    good = False
                    self.errors.append(f"{route}: {str(exc)[:200]}")
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
            time.sleep(0.02)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=15)


class Watcher:
    """Samples Serve's replicas every 0.25 s: when Serve migrated on its own (PENDING_MIGRATION on a node no plan
    drains) and when a plan's drain was under way."""

    def __init__(self, ray: LocalRayCluster) -> None:
        self.ray = ray
        self.samples: list[tuple[float, list[dict]]] = []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(requests.RequestException, ValueError):
                self.samples.append((time.time(), replicas(serve_apps(self.ray))))
            time.sleep(0.25)

    def serve_migrations(self, drained: set[str], since: float = 0.0) -> list[tuple[float, str]]:
        return [
            (t, r.get("node_id", ""))
            for t, reps in self.samples
            if t >= since
            for r in reps
            if r.get("state") == "PENDING_MIGRATION" and r.get("node_id") not in drained
        ]

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)


def register_and_deploy(api, staff, alice, team_a, grant, ray: LocalRayCluster) -> tuple[Any, dict[str, int]]:
    from apps.clusters.models import Cluster

    admin = api(staff)
    body = {
        "name": "compaction-e2e",
        "kind": "ray",
        "dashboard_url": ray.dashboard_url,
        "http_port": ray.serve_port,  # this test cluster's proxies are not on Serve's default port
        "pools": [{"name": "a100", "resource": "GPU", "capacity": "12"}],
    }
    resp = admin.post("/api/v1/clusters/", body, format="json")
    assert resp.status_code == 201, resp.content
    cluster = Cluster.objects.get(pk=resp.json()["id"])
    assert not cluster.compaction_settings.gcs_address, "registered with the dashboard URL alone"
    grant(team_a, cluster, "12")
    ids = {}
    for name, (count, gpus) in APPS.items():
        deps = [{"name": "Hello", "num_replicas": count, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}]
        resp = api(alice).post(
            "/api/v1/applications/", app_body("team-a", cluster.pk, name, deployments=deps), format="json"
        )
        assert resp.status_code == 201, resp.content
        ids[name] = resp.json()["id"]
    return cluster, ids


def all_running(ray: LocalRayCluster, counts: dict[str, int]) -> bool:
    apps = serve_apps(ray)
    for name, want in counts.items():
        app = apps.get(f"team-a--{name}") or {}
        reps = [r for r in (app.get("deployments") or {}).get("Hello", {}).get("replicas") or []]
        if app.get("status") != "RUNNING" or sum(1 for r in reps if r["state"] == "RUNNING") != want:
            return False
        if any(r["state"] != "RUNNING" for r in reps):
            return False
    return True


def states(ray: LocalRayCluster) -> list[tuple[str, str, str, str]]:
    """Every app's status and every replica's state and node, for a timeout's message."""
    apps = serve_apps(ray)
    return [(a, app.get("status", ""), "", "") for a, app in sorted(apps.items())] + sorted(
        (r["key"], "", r.get("state", ""), (r.get("node_id") or "")[:8]) for r in replicas(apps)
    )


def wait_running(ray: LocalRayCluster, counts: dict[str, int], what: str, timeout: float = 240) -> None:
    try:
        wait_for(lambda: all_running(ray, counts), timeout=timeout, interval=0.2, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; Serve shows {states(ray)}") from None


def plan_and_execute(api, staff, cluster, ray: LocalRayCluster, routes: list[str]) -> tuple[dict, Any, Traffic]:
    admin = api(staff)
    resp = admin.post("/api/v1/compaction/plans/", {"cluster": cluster.pk}, format="json")
    assert resp.status_code == 201, resp.content
    plan = resp.json()
    assert plan["state"] == "planned" and plan["nodes_to_drain"], plan
    # The plan was made right after RUNNING; the traffic that counts starts once every proxy has the routes (a proxy
    # still learning them answers 404: seen once in CI).
    wait_for_every_proxy(ray, [f"{ray.serve_url}{r}" for r in routes])
    with Traffic(ray, routes) as traffic:
        time.sleep(0.5)
        resp = admin.post(f"/api/v1/compaction/plans/{plan['id']}/execute/")
        assert resp.status_code == 202 and resp.json()["state"] == "executing", resp.content
        final = wait_for(
            lambda: (p := CompactionPlan.objects.get(pk=plan["id"])).state in ("succeeded", "failed") and p,
            timeout=300,
            what="compaction finished",
        )
        time.sleep(1)
    return plan, final, traffic


def check_outcome(
    ray: LocalRayCluster,
    plan: dict,
    final: Any,
    traffic: Traffic,
    counts: dict[str, int],
    serve_moved_first: bool = False,
) -> str:
    steps = list(final.steps.values("node_id", "state", "message"))
    assert final.state == "succeeded", (final.error, steps, final.outcome.get("problems"))
    out = final.outcome
    assert out["moved_twice"] == 0 and not out["problems"], out
    planned = sum(len(s["replicas"]) for s in final.steps.values("replicas"))
    if serve_moved_first:  # Serve emptied (part of) a planned node before the drain: fewer moves were left to make
        assert out["moves_made"] <= planned, out
    else:
        assert out["moves_made"] == planned, out
    assert final.drain_method == "job" and final.drain_job
    apps = serve_apps(ray)
    drained = set(plan["nodes_to_drain"])
    for name, want in counts.items():
        app = apps[f"team-a--{name}"]
        assert app["status"] == "RUNNING"
        reps = [r for r in app["deployments"]["Hello"]["replicas"] if r["state"] == "RUNNING"]
        assert len(reps) == want, (name, reps)
        assert not {r["node_id"] for r in reps} & drained, "a drained node still holds replicas"
    used = {r.get("node_id") for r in replicas(apps)}
    empty = [n for n in worker_ids(ray) if n not in used]
    assert empty, "no worker node ended empty"
    assert traffic.failed == 0, traffic.errors[:5]
    assert traffic.ok > 50
    return (
        f"nodes freed {len(drained)} (plan {len(plan['nodes_to_drain'])}), workers empty at the end {len(empty)}; "
        f"moves planned {out['moves_planned']}, made {out['moves_made']} ({out['as_planned']} on the planned node), "
        f"moved twice {out['moved_twice']}; seconds per node "
        f"{sorted(out['seconds_per_node'].values())} (drain call {out['drain_call_s']} s, total {out['total_s']} s, "
        f"waited for Serve {out['waited_for_serve_s']} s); requests ok {traffic.ok}/{traffic.ok + traffic.failed}"
    )


@pytest.mark.parametrize("compaction_ray", [{}], indirect=True, ids=["spread"])
def test_compaction_with_the_dashboard_url_only_right_after_running(
    compaction_ray, celery_worker, api, staff, alice, team_a, grant
):
    ray = compaction_ray
    cluster, ids = register_and_deploy(api, staff, alice, team_a, grant, ray)
    counts = {name: n for name, (n, _) in APPS.items()}
    wait_running(ray, counts, "Ray reports every app RUNNING", timeout=240)
    # Right away, as the user did: the stored observation may be older than the deployment; the plan observes.
    used = {r["node_id"] for r in replicas(serve_apps(ray))}
    assert len(used) == 3, "Ray's spread placement puts replicas on every worker"
    plan, final, traffic = plan_and_execute(api, staff, cluster, ray, [f"/team-a/{n}" for n in APPS])
    assert final.observed_at is not None
    report = check_outcome(ray, plan, final, traffic, counts)
    print(f"\ncompaction (spread, dashboard URL only): {report}")
    page = Client()
    page.force_login(staff)
    html = page.get(f"/compaction/{plan['id']}/").content.decode()
    assert "After (actual, as Ray reported it)" in html and "replicas moved more than once: <strong>0</strong>" in html
    assert all(Application.objects.get(pk=i).state == "running" for i in ids.values())


PACK = {"RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY": "1", "RAY_SERVE_NODE_COMPACTION_DELAY_S": "20"}


def deploy(api, alice, cluster, name: str, count: int, gpus: float) -> int:
    deps = [{"name": "Hello", "num_replicas": count, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}]
    resp = api(alice).post(
        "/api/v1/applications/", app_body("team-a", cluster.pk, name, deployments=deps), format="json"
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def scale(api, alice, app_id: int, count: int, gpus: float) -> None:
    deps = [{"name": "Hello", "num_replicas": count, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": gpus}}]
    resp = api(alice).patch(f"/api/v1/applications/{app_id}/", {"deployments": deps}, format="json")
    assert resp.status_code == 200, resp.content


@pytest.mark.parametrize("compaction_ray", [PACK], indirect=True, ids=["pack+serve-compaction"])
def test_compaction_beside_serves_own_pack_compaction(compaction_ray, celery_worker, api, staff, alice, team_a, grant):
    """Pack scheduling fills the fullest node, so fragmentation comes from scaling down: a filler app (6 x 1 GPU)
    fills one worker and half of another, the three apps fill the rest of it and spill onto the third, then the
    filler shrinks to one replica. Serve's own compaction would free the third worker 20 s later; the control
    plane plans and drains first, and Serve then has nothing to do. Then the other way round: Serve compacts on
    its own, a plan is refused while it moves replicas, and the cluster page says so."""
    from apps.clusters.models import Cluster

    ray = compaction_ray
    admin = api(staff)
    body = {
        "name": "compaction-pack",
        "kind": "ray",
        "dashboard_url": ray.dashboard_url,
        "http_port": ray.serve_port,
        "pools": [{"name": "a100", "resource": "GPU", "capacity": "12"}],
    }
    resp = admin.post("/api/v1/clusters/", body, format="json")
    assert resp.status_code == 201, resp.content
    cluster = Cluster.objects.get(pk=resp.json()["id"])
    grant(team_a, cluster, "12")
    counts = {"filler": 6}
    filler = deploy(api, alice, cluster, "filler", 6, 1.0)
    wait_running(ray, counts, "filler RUNNING", timeout=240)
    ids = {name: deploy(api, alice, cluster, name, n, g) for name, (n, g) in APPS.items()}
    counts.update({name: n for name, (n, _) in APPS.items()})
    wait_running(ray, counts, "the three apps RUNNING", timeout=240)
    scale(api, alice, filler, 1, 1.0)
    counts["filler"] = 1
    with Watcher(ray) as watcher:
        wait_running(ray, counts, "filler scaled down", timeout=240)
        before = replicas(serve_apps(ray))
        print(f"\nplacement before: {sorted((r['key'], r['node_id'][:8]) for r in before)}")
        plan, final, traffic = plan_and_execute(api, staff, cluster, ray, [f"/team-a/{n}" for n in counts])
        drain_started = min(s.started_at for s in final.steps.all()).timestamp()
        moved_first = any(t < drain_started for t, _ in watcher.serve_migrations(set()))
        report = check_outcome(ray, plan, final, traffic, counts, serve_moved_first=moved_first)
        time.sleep(35)  # past Serve's compaction delay: it finds nothing more to free
    drained = set(plan["nodes_to_drain"])
    during = watcher.serve_migrations(drained, since=drain_started)
    assert not during, f"Serve migrated while (or after) the control plane drained: {during[:3]}"
    earlier = watcher.serve_migrations(drained)
    if earlier:  # Serve moved first: the drain waited until it was done
        assert max(t for t, _ in earlier) < drain_started
        assert final.outcome["waited_for_serve_s"] > 0
    assert all_running(ray, counts)
    print(
        f"compaction (pack + Serve's own compaction): {report}; Serve's own migrations seen before the drain: "
        f"{len({n for _, n in earlier})} node(s), during or after it: {len(during)}"
    )

    # The other way round. After the drain one worker holds 3.5 GPUs and one is empty: an app of 2 x 0.5 GPU puts
    # one replica in the last half GPU of the first (pack: best fit on a node in use) and one on the empty worker;
    # then "embed" goes. 3 GPUs + 0.5 GPU on two nodes: Serve's own compaction moves the lone replica.
    counts["extra"] = 2
    deploy(api, alice, cluster, "extra", 2, 0.5)
    wait_running(ray, counts, "extra RUNNING", timeout=240)
    assert api(alice).delete(f"/api/v1/applications/{ids['embed']}/").status_code in (200, 202, 204)
    del counts["embed"]
    wait_for(lambda: "team-a--embed" not in serve_apps(ray), timeout=120, what="embed removed")
    print(f"placement for Serve: {sorted((r['key'], r['node_id'][:8]) for r in replicas(serve_apps(ray)))}")
    seen_at = time.time()
    wait_for(
        lambda: [r for r in replicas(serve_apps(ray)) if r["state"] == "PENDING_MIGRATION"],
        timeout=120,
        interval=0.1,
        what="Serve's own compaction to move a replica",
    )
    observe(cluster.pk)
    refused = api(staff).post("/api/v1/compaction/plans/", {"cluster": cluster.pk}, format="json")
    page = Client()
    page.force_login(staff)
    html = page.get(f"/clusters/{cluster.pk}/").content.decode()
    still = [r for r in replicas(serve_apps(ray)) if r["state"] == "PENDING_MIGRATION"]
    print(
        f"Serve's own compaction began {time.time() - seen_at:.0f} s after the last change; plan answer "
        f"{refused.status_code}; banner shown: {'Serve is moving replicas on its own' in html}"
    )
    if still:  # Serve may finish between the reads; what was read while it moved must say so
        assert refused.status_code == 400 and "Serve is moving replicas" in refused.json()["cluster"][0]
        assert "Serve is moving replicas on its own" in html
    wait_running(ray, counts, "Serve's own compaction done", timeout=120)
    observe(cluster.pk)
    html = page.get(f"/clusters/{cluster.pk}/").content.decode()
    assert "by Serve (or Ray) on its own" in html, "Serve's own moves are listed on the cluster page"
