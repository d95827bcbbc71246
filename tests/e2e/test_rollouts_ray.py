"""Canary rollouts on real Ray (issue 27): through the API, a good version reaches 100% in three steps while a
client calls the app without a pause, every answer 200 and each step's share of the new version near its weight;
a version that answers 500 to 20% of requests is rolled back at its first step by the error-rate gate, the old
version answers everything within one step, no request is dropped by the switch, and the team's webhook hears
it. Beat's work (observe, scrape, tick, evaluate) is done by the test's loop, at beat's pace."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import pytest
import requests
from django.utils import timezone

from apps.alerts import services as alerts
from apps.alerts.models import Incident, WebhookEndpoint
from apps.applications.models import Application
from apps.deploys.observe import observe_cluster
from apps.metrics.services import scrape_cluster
from apps.rollouts.models import Rollout
from tests.conftest import app_body, wait_for, wait_for_every_proxy
from tests.support.receiver import Receiver
from workers.on_cluster.splitter import SIDE_HEADER
from workers.tasks.alerts import evaluate_alerts
from workers.tasks.rollouts import tick_cluster

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

SECRET = "receiver-secret-0123456789abcdef"
STEP_S = 30
# The good versions' rollouts judge latency with a slack of a second. The new version is the same code, yet on the
# test host (2 cores running the suite, Ray's nodes, the client and Prometheus) its p95 over a step's ~190 requests
# came out 1.5x the old one's (over 165 ms against 110) and the default gate rolled it back. What these tests judge
# is the steps, the shares and the error gate; the latency gate's arithmetic is tested on its own (test_rollouts.py).
HOST_NOISE_GATES = {"p95_slack_ms": 1000}


def version(greeting: str, error_rate: float = 0.0) -> dict:
    return {
        "route_prefix": "/team-a/web",
        "import_path": "examples.hello:build",
        "args": {"greeting": greeting, "error_rate": error_rate},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}],
    }


@dataclass
class Answer:
    at: float
    status: int
    greeting: str  # "v1", "v2", ... or "" when the request failed
    side: str
    error: str = ""  # the exception, or the start of a body that is not the app's JSON


@dataclass
class Client:
    """Calls the app's route without a pause, one new connection each (as many clients would), and keeps every
    answer."""

    url: str
    answers: list[Answer] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.time()
            try:
                r = requests.get(self.url, params={"name": "t"}, timeout=30)
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                text = body.get("message") or body.get("error") or ""
                self.answers.append(
                    Answer(
                        t,
                        r.status_code,
                        text.split(",")[0].split(" ")[0],
                        r.headers.get(SIDE_HEADER, ""),
                        "" if body else r.text[:120],
                    )
                )
            except Exception as exc:  # noqa: BLE001 - whatever went wrong is a failed request, and the client goes on
                self.answers.append(Answer(t, 0, "", "", f"{type(exc).__name__}: {exc}"))

    def __enter__(self) -> Client:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at < end]


class Proxies:
    """Serve's proxies and their states, each change with its time (what the test host's shared port means)."""

    def __init__(self, ray_cluster) -> None:
        self.url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
        self.changes: list[tuple[float, dict]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                now = {
                    k[:8]: p.get("status")
                    for k, p in (requests.get(self.url, timeout=5).json().get("proxies") or {}).items()
                }
            except (requests.RequestException, ValueError):
                now = {}
            if not self.changes or self.changes[-1][1] != now:
                self.changes.append((time.time(), now))
            time.sleep(0.3)

    def joining(self, at: float, after_healthy_s: float = 2.0) -> bool:
        """Whether a proxy was joining this host's shared port at ``at``: listed but not HEALTHY yet, or HEALTHY
        for less than ``after_healthy_s`` (it may still be learning the routes)."""
        for i, (t, states) in enumerate(self.changes):
            end = self.changes[i + 1][0] if i + 1 < len(self.changes) else float("inf")
            if not t - 0.5 <= at < end + after_healthy_s:
                continue
            before = self.changes[i - 1][1] if i else {}
            if any(st != "HEALTHY" or node not in before for node, st in states.items()):
                return True
        return False

    def __enter__(self) -> Proxies:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def joining_proxy(a: Answer, proxies: Proxies) -> bool:
    """A 404 from Serve's proxy itself ("Path ... not found", no side header) while a proxy was joining: every test
    node listens on one port of this host, and the kernel hands connections to a new proxy before it has learnt the
    routes. On a real cluster each node has its own address, and a load balancer waits for the proxy's
    /-/healthz, which answers 503 until its route table is populated. Nothing else is excused."""
    return a.status == 404 and not a.side and a.error.startswith("Path '") and proxies.joining(a.at)


def beat(cluster_id: int) -> None:
    """What beat does for a cluster with a rollout: scrape, tick (observe, judge, push), evaluate the alert rules."""
    scrape_cluster(cluster_id)
    tick_cluster(cluster_id)
    evaluate_alerts()  # the task: one evaluation at a time, beside the one a rollback asks for


def drive(cluster_id: int, rollout_id: int, until, timeout: float, what: str) -> Rollout:
    def step() -> Rollout | None:
        beat(cluster_id)
        r = Rollout.objects.get(pk=rollout_id)
        return r if until(r) else None

    return wait_for(step, timeout=timeout, interval=2.0, what=what)


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def ray_apps(ray_cluster) -> dict:
    url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    return requests.get(url, timeout=10).json().get("applications") or {}


def test_a_good_version_rolls_out_in_steps_and_a_bad_one_rolls_back_on_its_own(
    settings, ray_cluster, ray_env, team_a, grant, alice, api
):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver listens on loopback
    settings.ROLLOUT_GRACE_S = 5
    alerts.ensure_default_rules()
    grant(team_a, ray_env, "2")  # v1 (0.5 GPU) and a new version beside it, and twice the new one while promoted
    client = api(alice)
    cluster_id = ray_env.pk
    body = {**app_body("team-a", cluster_id, "web"), **version("v1")}
    app_id = client.post("/api/v1/applications/", body, format="json").json()["id"]

    def running() -> bool:
        observe_cluster(cluster_id)
        app = Application.objects.get(pk=app_id)
        return app.state == "running" and app.deployed_revision_id == app.current_revision_id

    wait_for(running, timeout=180, what="v1 RUNNING")
    url = f"{ray_cluster.serve_url}/team-a/web"
    wait_for_every_proxy(ray_cluster, [url])

    # --- A good version, three steps, a client calling all along ---------------------------------------------------
    with Receiver(SECRET) as rx, Client(url) as traffic, Proxies(ray_cluster) as proxies:
        WebhookEndpoint.objects.create(team=team_a, url=rx.url, secret=SECRET, created_by=alice)
        time.sleep(2)
        resp = client.post(
            f"/api/v1/applications/{app_id}/rollouts/",
            {"spec": version("v2"), "steps": [10, 50, 100], "step_seconds": STEP_S, "gates": HOST_NOISE_GATES},
            format="json",
        )
        assert resp.status_code == 201, resp.content
        good = resp.json()
        assert (good["state"], good["phase"], good["from_revision"], good["to_revision"]) == ("running", "start", 1, 2)
        started = time.time()
        r = drive(cluster_id, good["id"], lambda r: r.phase == "done", timeout=420, what="the good rollout done")
        good_s = time.time() - started
        time.sleep(3)
        traffic.stop.set()
    failed = [a for a in traffic.answers if a.status != 200 and not joining_proxy(a, proxies)]
    excused = [a for a in traffic.answers if a.status != 200 and joining_proxy(a, proxies)]
    print(
        f"\ngood rollout: {good_s:.0f} s, {len(traffic.answers)} requests, {len(failed)} failed "
        f"({len(excused)} more answered 404 by a proxy joining the test host's shared port)"
    )
    assert failed == [], failed[:5]
    assert r.state == "succeeded" and r.promoted and [v["verdict"] for v in r.verdicts] == ["pass"] * 3, [
        (v["verdict"], v["reason"]) for v in r.verdicts
    ]
    shares = []
    for i, v in enumerate(r.verdicts):
        # from 3 s after the step began (the splitter's new weight applied) to the next step's start
        end = ts(r.verdicts[i + 1]["started_at"]) if i + 1 < len(r.verdicts) else r.decided_at.timestamp()
        answers = traffic.between(ts(v["started_at"]) + 3, end)
        share = 100 * sum(a.greeting == "v2" for a in answers) / len(answers)
        shares.append((v["weight"], round(share, 1), len(answers)))
        assert abs(share - v["weight"]) <= 6, shares
    print(f"new version's share by step (weight, observed %, requests): {shares}")
    after = [a for a in traffic.answers if a.at > r.finished_at.timestamp()]
    assert after and all(a.greeting == "v2" and a.side == "" for a in after)  # the app alone again, the new version
    app = Application.objects.get(pk=app_id)
    assert app.current_revision.number == 2 and app.deployed_revision_id == app.current_revision_id
    wait_for(lambda: set(ray_apps(ray_cluster)) == {"team-a--web"}, timeout=60, what="the splitter and canary gone")
    assert ray_apps(ray_cluster)["team-a--web"]["route_prefix"] == "/team-a/web"

    # --- A bad version: 500 to 20% of requests, rolled back at its first step ----------------------------------------
    wait_for_every_proxy(ray_cluster, [url])  # the proxies of nodes the first rollout's extra apps left are gone
    with Receiver(SECRET) as rx, Client(url) as traffic, Proxies(ray_cluster) as proxies:
        WebhookEndpoint.objects.update(url=rx.url)
        time.sleep(2)
        resp = client.post(
            f"/api/v1/applications/{app_id}/rollouts/",
            {"spec": version("v3", error_rate=0.2), "steps": [10, 50, 100], "step_seconds": STEP_S},
            format="json",
        )
        assert resp.status_code == 201, resp.content
        bad = resp.json()
        posted = time.time()
        r = drive(
            cluster_id, bad["id"], lambda r: r.state == "rolled_back", timeout=240, what="the bad one rolled back"
        )
        decided = r.decided_at.timestamp()
        split_at = ts(r.verdicts[0]["started_at"])
        r = drive(cluster_id, bad["id"], lambda r: r.phase == "done", timeout=120, what="the bad rollout done")
        wait_for(
            lambda: {b["body"]["rule"] for b in rx.received} >= {"rollout_rolled_back"}, timeout=60, what="the webhook"
        )
        # The client goes on 15 s after the end. Not longer: the nodes that held only the new version and the
        # splitter lost their last replica, so Serve drains their proxies and kills them 30 s later, resetting the
        # connections the kernel queued for them on this host's shared port (every test node listens on one port;
        # on a real cluster each node has its own address and a load balancer stops sending to a draining proxy).
        time.sleep(max(3.0, r.finished_at.timestamp() + 15 - time.time()))
        traffic.stop.set()
    print(f"bad rollout: split at +0 s, rolled back after {decided - split_at:.1f} s: {r.reason}")
    assert [v["verdict"] for v in r.verdicts] == ["fail"] and r.verdicts[0]["weight"] == 10
    # Judged on what the first scrapes saw: the version fails 20% of its requests, but the gate decides as soon as
    # the share it sees passes the allowed one, and an early count may hold fewer of the failures (measured 4.8%).
    canary = r.verdicts[0]["canary"]
    assert "5xx" in r.reason and canary["errors"] > 0
    assert canary["error_rate"] > r.gates["max_error_rate_increase"]
    # Every failure came from the bad version itself; nothing was dropped by a switch.
    dropped = [
        a
        for a in traffic.answers
        if a.status != 200 and not (a.status == 500 and a.greeting == "v3") and not joining_proxy(a, proxies)
    ]
    print(f"{sum(joining_proxy(a, proxies) for a in traffic.answers)} answered 404 by a proxy joining the shared port")
    assert dropped == [], (
        [(f"{a.at - split_at:+.1f} s from the split", a.status, a.error) for a in dropped[:5]],
        f"posted {posted - split_at:+.1f} s, rolled back {decided - split_at:+.1f} s, done "
        f"{r.finished_at.timestamp() - split_at:+.1f} s",
        [(f"{t - split_at:+.1f}", p) for t, p in proxies.changes],
    )
    # Within one step of the rollback the old version answers everything.
    last_new = max((a.at for a in traffic.answers if a.greeting == "v3"), default=decided) - decided
    settled = [a for a in traffic.answers if a.at > decided + last_new]
    print(f"{len(traffic.answers)} requests; the new version's last answer began {last_new:+.1f} s from the rollback")
    assert last_new <= STEP_S and len(settled) > 100
    assert all(a.status == 200 and a.greeting == "v2" for a in settled)
    assert decided - split_at <= STEP_S + 10  # judged within its first step
    hook = next(b for b in rx.received if b["body"]["rule"] == "rollout_rolled_back")
    assert hook["verified"] and hook["body"]["team"] == "team-a" and hook["body"]["application"] == "web"
    incident = Incident.objects.get(kind="rollout_rolled_back")
    assert incident.evidence["to_revision"] == 3 and incident.evidence["canary"]["errors"] > 0
    app = Application.objects.get(pk=app_id)
    assert app.current_revision.number == 2
    assert timezone.now() > r.finished_at
    wait_for(lambda: set(ray_apps(ray_cluster)) == {"team-a--web"}, timeout=60, what="the bad version gone")
