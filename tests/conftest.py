"""Shared fixtures: three named people per team (owner, member, outsider), staff, clusters, API clients.

Tests marked ``ray`` run against a real local Ray cluster that this session starts on its own ports
(``apps.localdev.local_ray.TEST``) and stops at the end; it can run beside the demo cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from apps.clusters.models import Cluster
from apps.clusters.services import cluster_create
from apps.quotas.services import quota_set
from apps.teams.models import Membership, Team
from apps.teams.services import issue_token, team_create
from controlplane.celery import app as celery_app

# Tests never share a queue with a running `make run`: Redis when CI gives one, else in-process memory.
celery_app.conf.broker_url = os.environ.get("CELERY_BROKER_URL") or "memory://"
celery_app.conf.broker_transport_options = {"polling_interval": 0.1}

User = get_user_model()
PASSWORD = "a-Long-test-passw0rd"


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    """Rate-limit counters live in a shared cache (Redis in CI): every test starts without anyone's."""
    import contextlib

    from django.core.cache import cache

    with contextlib.suppress(Exception):  # the database cache is reachable only in tests that use the database
        cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db) -> Callable[..., Any]:
    def make(username: str, **extra: Any) -> Any:
        extra.setdefault("email", f"{username}@example.com")
        user = User.objects.create_user(username=username, password=PASSWORD, **extra)
        return user

    return make


@pytest.fixture
def staff(make_user):
    return make_user("platform", is_staff=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def charlie(make_user):
    """An outsider: in no team of alice's or bob's."""
    return make_user("charlie")


@pytest.fixture
def make_team(db) -> Callable[..., Team]:
    def make(slug: str, owner: Any, members: dict[Any, str] | None = None) -> Team:
        team = team_create(actor=owner, slug=slug, name=slug.title())
        for user, role in (members or {}).items():
            Membership.objects.create(team=team, user=user, role=role)
        return team

    return make


@pytest.fixture
def team_a(make_team, alice):
    return make_team("team-a", alice)


@pytest.fixture
def team_b(make_team, bob):
    return make_team("team-b", bob)


@pytest.fixture
def make_cluster(db, staff) -> Callable[..., Cluster]:
    """Register a cluster. ``inventoried=True`` (the default) stands for a cluster whose pre-existing apps were
    already recorded (none), as after its first observation; tests of registration itself pass False."""

    def make(
        name: str = "prod-1",
        dashboard_url: str = "http://127.0.0.1:1",
        gpus: str = "8",
        inventoried: bool = True,
        **extra: Any,
    ) -> Cluster:
        cluster = cluster_create(
            actor=staff,
            data={"name": name, "kind": "ray", "dashboard_url": dashboard_url, **extra},
            pools=[{"name": "a100", "resource": "GPU", "capacity": Decimal(gpus)}],
        )
        if inventoried:
            Cluster.objects.filter(pk=cluster.pk).update(inventory_taken_at=timezone.now())
            cluster.refresh_from_db()
        return cluster

    return make


@pytest.fixture
def cluster(make_cluster) -> Cluster:
    return make_cluster()


@pytest.fixture
def grant(staff) -> Callable[..., Any]:
    def give(team: Team, cluster: Cluster, gpus: str = "4") -> Any:
        return quota_set(actor=staff, team=team, cluster=cluster, pool_name="a100", gpus=Decimal(gpus))

    return give


@pytest.fixture
def api() -> Callable[[Any], APIClient]:
    def client_for(user: Any) -> APIClient:
        client = APIClient()
        if user is not None:
            _, secret = issue_token(user=user, name="test")
            client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
        return client

    return client_for


def app_body(team: str, cluster: int, name: str, **overrides: Any) -> dict:
    body = {
        "team": team,
        "cluster": cluster,
        "name": name,
        "route_prefix": f"/{team}/{name}",
        "import_path": "examples.hello:app",
        "args": {},
        "runtime_env": {},
        "deployments": [{"name": "Hello", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.1, "num_gpus": 0.5}}],
    }
    body.update(overrides)
    return body


# ---- real Ray -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    from apps.localdev.local_ray import TEST

    started = False
    if not TEST.is_up():
        TEST.start(log=lambda m: None)
        started = True
    yield TEST
    if started and not os.environ.get("KEEP_TEST_RAY"):
        TEST.stop()


@pytest.fixture
def celery_worker(transactional_db) -> Iterator[Any]:
    """A real Celery worker in a thread of this process, consuming from the configured broker."""
    from celery.contrib.testing.worker import start_worker

    from controlplane.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    # one worker for both queues here (pushes and deliveries); production runs one per queue (tests/test_deployment.py)
    with start_worker(
        app, pool="threads", concurrency=2, perform_ping_check=False, shutdown_timeout=20, queues=["celery", "webhooks"]
    ) as worker:
        yield worker


def reset_serve(ray_cluster: Any) -> None:
    """Remove every app an earlier test left on the shared test cluster, and wait until Serve has let go of them."""
    url = f"{ray_cluster.dashboard_url}/api/serve/applications/"
    empty = {"http_options": {"host": "0.0.0.0", "port": ray_cluster.serve_port}, "applications": []}
    requests.put(url, json=empty, timeout=30).raise_for_status()
    wait_for(lambda: not (requests.get(url, timeout=10).json().get("applications") or {}), what="Serve emptied")


@pytest.fixture
def ray_env(ray_cluster, celery_worker, make_cluster):
    """The test Ray cluster, emptied, registered as a new cluster would be (its inventory taken by the control
    plane), with a worker running."""
    reset_serve(ray_cluster)
    return make_cluster(
        name="local-test",
        dashboard_url=ray_cluster.dashboard_url,
        serve_url=ray_cluster.serve_url,
        http_port=ray_cluster.serve_port,
        gcs_address=ray_cluster.gcs_address,
        gpus="12",
        inventoried=False,
    )


def wait_for(predicate: Callable[[], Any], timeout: float = 90, interval: float = 0.5, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


# The replica states that keep a node's proxy: Ray 2.60's DeploymentState.get_active_node_ids lists them in the method
# itself (nothing to import), so they are written out here as Ray has them.
ACTIVE_REPLICA_STATES = frozenset({"STARTING", "UPDATING", "RECOVERING", "RUNNING", "PENDING_MIGRATION"})


def serve_proxy_snapshot(ray_cluster: Any) -> tuple[tuple[str, str, str], ...] | None:
    """The Serve proxies as they stand, or None while they are not steady. Steady: the proxies the controller lists
    are HEALTHY and on exactly the nodes that keep one (the controller's node and those holding an active replica;
    Serve starts one on each and drains the others), and every live ProxyActor is one of them (the controller stops
    listing a DRAINED proxy in the tick it kills it, before its process is gone)."""
    status = requests.get(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=10).json()
    proxies = status.get("proxies") or {}
    kept = {(status.get("controller_info") or {}).get("node_id")}
    for app in (status.get("applications") or {}).values():
        for deployment in (app.get("deployments") or {}).values():
            kept |= {
                r.get("node_id") for r in deployment.get("replicas") or [] if r.get("state") in ACTIVE_REPLICA_STATES
            }
    kept.discard(None)
    kept.discard("")
    if set(proxies) != kept or any(p.get("status") != "HEALTHY" for p in proxies.values()):
        return None
    actors = requests.get(
        f"{ray_cluster.dashboard_url}/api/v0/actors",
        params={
            "filter_keys": ["class_name", "state"],
            "filter_predicates": ["=", "="],
            "filter_values": ["ProxyActor", "ALIVE"],
            "limit": 1000,
        },
        timeout=10,
    ).json()["data"]["result"]["result"]
    if {a["actor_id"] for a in actors} - {p.get("actor_id") for p in proxies.values()}:
        return None
    return tuple(sorted((node, p.get("actor_id", ""), p.get("status", "")) for node, p in proxies.items()))


def wait_for_steady_proxies(ray_cluster: Any, timeout: float = 90, hold: float = 2.0) -> None:
    """Until the Serve proxies are steady (``serve_proxy_snapshot``) and stay the same for ``hold`` seconds. A proxy
    on a node that lost its last replica (an earlier test's apps removed) drains and is killed 30 s later; on the test
    host every proxy listens on one port, so the connections the kernel queued for it are reset (measured: one reset
    at the kill, 31.7 s after the removal). The hold covers the moment between the kill and its process's exit. Call
    it before sending traffic whose every answer counts; it sends none itself."""
    seen: dict[str, Any] = {"snapshot": None, "since": 0.0}

    def steady() -> bool:
        snapshot = serve_proxy_snapshot(ray_cluster)
        now = time.monotonic()
        if snapshot is None or snapshot != seen["snapshot"]:
            seen.update(snapshot=snapshot, since=now)
            return False
        return now - seen["since"] >= hold

    wait_for(steady, timeout=timeout, interval=0.5, what="every Serve proxy HEALTHY and kept, and none dying")


def wait_for_every_proxy(
    ray_cluster: Any,
    urls: list[str],
    headers: dict[str, str] | None = None,
    answers: int = 20,
    timeout: float = 90,
) -> None:
    """Serve runs a proxy on every node that holds a replica, all on one port here (the kernel hands each new
    connection to one of them), and each learns a new route on its own. Wait until the set of proxies is steady
    (every one HEALTHY: a DRAINING proxy, on a node that lost its replicas, is killed 30 s later and resets the
    connections waiting for it), then until ``answers`` new connections in a row to each URL get 200 (a proxy
    that has not caught up answers 404, or closes the connection)."""
    wait_for_steady_proxies(ray_cluster, timeout)

    def everywhere() -> bool:
        try:
            return all(
                requests.get(url, headers=headers, timeout=10).status_code == 200
                for _ in range(answers)
                for url in urls
            )
        except requests.RequestException:
            return False

    wait_for(everywhere, timeout=timeout, interval=1.0, what=f"{', '.join(urls)} answering on every proxy")


@pytest.fixture(scope="session", autouse=True)
def _close_thread_connections(django_db_setup, django_db_blocker) -> Iterator[None]:
    """Worker and live-server threads keep their own connections; end them so the test database can be dropped."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


def pytest_collection_modifyitems(config, items):
    """Tests that drain nodes of the shared test Ray cluster run last (a drained node takes no new replicas),
    and the one that kills its head runs after them."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("drains_nodes") is not None,
            item.get_closest_marker("stops_ray") is not None,
        )
    )


def require(component: str, install: str) -> None:
    """A test needs ``component``. In CI (``CI=true``) its absence fails the run; elsewhere the test is skipped
    with the command that installs it, listed in the summary (``-ra``): a skipped test is not a passing one."""
    message = f"{component} is missing: install it with `{install}`"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI runs every test; .ci/run installs it)")
    pytest.skip(f"NOT RUN: {message}")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many fuzz cases ran against the API, per role (the count the closing notes report)."""
    import sys

    matrix = sys.modules.get("tests.test_permission_matrix")
    if matrix is not None and matrix.SIZE["requests"]:
        routes = len(matrix.ALL)
        pairs = len(matrix.CASES)
        terminalreporter.write_line(
            f"Permission matrix: {routes} routes, {pairs} route-methods x {len(matrix.PRINCIPALS)} principals x "
            f"own/other team = {matrix.SIZE['requests']} requests"
        )
    fuzz = sys.modules.get("tests.test_fuzz")
    if fuzz is not None and fuzz.CASES:
        per_role = ", ".join(f"{role} {n}" for role, n in fuzz.CASES.items())
        terminalreporter.write_line(f"API fuzz: {sum(fuzz.CASES.values())} calls ({per_role})")
