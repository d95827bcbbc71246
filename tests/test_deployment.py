"""The production deployment: compose file against the Compose schema, every service's command really starts,
the Dockerfile and Kubernetes manifests use the same entrypoints, and the health, readiness and metrics endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
K8S = [d for d in yaml.safe_load_all((ROOT / "docs/kubernetes/controlplane.yaml").read_text()) if d]
K8S_PROMETHEUS = [d for d in yaml.safe_load_all((ROOT / "docs/kubernetes/prometheus.yaml").read_text()) if d]
APP_SERVICES = ("web", "worker", "beat", "migrate")


def test_compose_file_follows_the_compose_specification():
    schema = json.loads((ROOT / "tests/schemas/compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)
    services = COMPOSE["services"]
    assert {"web", "worker", "webhooks", "beat", "postgres", "redis", "ray-head", "ray-worker"} <= set(services)
    for name in ("web", "worker", "postgres", "redis", "ray-head"):
        assert "healthcheck" in services[name], name
    assert set(COMPOSE["volumes"]) >= {"postgres-data", "redis-data"}
    env_example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "ALLOWED_HOSTS"} <= set(env_example)


def test_dockerfile_and_kubernetes_use_the_compose_entrypoints():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = json.loads(next(line for line in dockerfile.splitlines() if line.startswith("CMD "))[4:])
    assert cmd == COMPOSE["services"]["web"]["command"]
    assert "USER app" in dockerfile and "collectstatic" in dockerfile
    containers = {
        c["name"]: c
        for d in K8S
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    for name in ("web", "worker", "webhooks", "beat"):
        assert containers[name]["command"] == COMPOSE["services"][name]["command"], name


def test_deliveries_run_on_their_own_queue_and_worker():
    """A slow webhook receiver cannot delay pushes: deliveries are routed to the webhooks queue, which only the
    webhooks worker consumes (compose, Kubernetes and make run start one)."""
    from controlplane.celery import app

    router = app.amqp.router
    assert router.route({}, "workers.tasks.alerts.deliver")["queue"].name == "webhooks"
    assert router.route({}, "workers.tasks.sync.sync_cluster")["queue"].name == "celery"
    worker, webhooks = COMPOSE["services"]["worker"]["command"], COMPOSE["services"]["webhooks"]["command"]
    assert "-Q" not in worker  # the default queue only
    assert webhooks[webhooks.index("-Q") + 1] == "webhooks"
    run_local = (ROOT / "apps/localdev/management/commands/run_local.py").read_text()
    assert '"webhooks": [' in run_local and '"-Q",\n                "webhooks",' in run_local


def test_kubernetes_manifests_deserialise_into_the_api_models():
    from kubernetes.client import ApiClient

    models = {
        "Namespace": "V1Namespace",
        "ServiceAccount": "V1ServiceAccount",
        "ClusterRole": "V1ClusterRole",
        "ClusterRoleBinding": "V1ClusterRoleBinding",
        "ConfigMap": "V1ConfigMap",
        "Secret": "V1Secret",
        "Job": "V1Job",
        "Deployment": "V1Deployment",
        "Service": "V1Service",
    }
    client = ApiClient()
    for doc in K8S + K8S_PROMETHEUS:
        obj = client.deserialize(json.dumps(doc), models[doc["kind"]], "application/json")
        assert obj.metadata.name == doc["metadata"]["name"]
        if doc["kind"] == "Deployment":
            spec = obj.spec.template.spec
            assert spec.security_context.run_as_non_root is True
            assert obj.spec.selector.match_labels == doc["spec"]["template"]["metadata"]["labels"]
    web = next(d for d in K8S if d["kind"] == "Deployment" and d["metadata"]["name"] == "controlplane-web")
    probes = web["spec"]["template"]["spec"]["containers"][0]
    assert (
        probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
        and probes["readinessProbe"]["httpGet"]["path"] == "/readyz"
    )
    beat = next(d for d in K8S if d["metadata"]["name"] == "controlplane-beat")
    assert beat["spec"]["replicas"] == 1


def test_ray_service_commands_parse_with_rays_cli():
    from ray.scripts.scripts import start

    for name in ("ray-head", "ray-worker"):
        cmd = COMPOSE["services"][name]["command"]
        assert cmd[:2] == ["ray", "start"]
        ctx = start.make_context("start", list(cmd[2:]))  # raises on an unknown option or a bad value
        assert ctx.params["block"] is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prod_env(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    env.update(
        {
            "DEBUG": "false",
            "SECRET_KEY": "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "CONTROLPLANE_VAR_DIR": str(tmp_path),
            "DJANGO_SUPERUSER_USERNAME": "admin",
            "DJANGO_SUPERUSER_EMAIL": "a@example.com",
            "DJANGO_SUPERUSER_PASSWORD": "a-Long-passw0rd",
            "FIELD_ENCRYPTION_KEYS": "YnVpbGQtb25seS1ub3Qtc2VjcmV0LTAxMjM0NTY3ODk=",
            "PATH": os.environ["PATH"],
        }
    )
    return env


def _run(cmd: list[str], env: dict, **kw):
    exe = str(Path(sys.executable).with_name(cmd[0])) if cmd[0] in ("gunicorn", "celery") else cmd[0]
    if cmd[0] == "python":
        exe = sys.executable
    return [exe, *cmd[1:]]


def test_every_app_service_starts_from_its_compose_command(prod_env, tmp_path):
    """migrate, web, worker and beat from the compose file's commands, with its environment: every process logs
    JSON lines with the same fields, and a push made by the worker shows on the web's /metrics and on the worker's
    own endpoint (the Kubernetes manifests' way)."""
    from tests.fake_ray import FakeRay

    services = COMPOSE["services"]
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    assert COMPOSE["x-app"]["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    worker_port = _free_port()
    prod_env.update({"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "RECONCILE_INTERVAL_S": "2"})
    worker_env = {**prod_env, "WORKER_METRICS_PORT": str(worker_port)}
    ray = FakeRay().start()
    migrate = services["migrate"]["command"]
    assert migrate[:2] == ["sh", "-c"]
    done = subprocess.run(
        ["sh", "-c", migrate[2].replace("python ", f"{sys.executable} ")],
        cwd=ROOT,
        env=prod_env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    port = _free_port()
    web_cmd = [f"127.0.0.1:{port}" if a == "0.0.0.0:8000" else a for a in _run(services["web"]["command"], prod_env)]
    procs = {
        "web": subprocess.Popen(
            web_cmd, cwd=ROOT, env=prod_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        ),
        "worker": subprocess.Popen(
            _run(services["worker"]["command"], prod_env),
            cwd=ROOT,
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        "beat": subprocess.Popen(
            [a.replace("/var/lib/controlplane", str(tmp_path)) for a in _run(services["beat"]["command"], prod_env)],
            cwd=ROOT,
            env=prod_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    }
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except requests.RequestException:
                time.sleep(0.5)
        assert ready is not None and ready.status_code == 200, ready and ready.text
        assert ready.json()["checks"] == {"database": "ok", "broker": "ok"}
        requests.get(f"http://127.0.0.1:{port}/no-such-page", timeout=5, headers={"X-Request-ID": "req-json-1"})
        health = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.json() == {"status": "ok"}
        shell = (
            "from django.contrib.auth.models import User; from apps.clusters.services import cluster_create; "
            "from apps.teams.services import team_create; from apps.quotas.services import quota_set; "
            "from apps.applications.services import application_create; "
            "u = User.objects.get(username='admin'); "
            f"c = cluster_create(actor=u, data={{'name': 'c', 'dashboard_url': '{ray.url}'}}, "
            "pools=[{'name': 'a100', 'resource': 'GPU', 'capacity': 8}]); "
            "t = team_create(actor=u, slug='t', name='T'); "
            "quota_set(actor=u, team=t, cluster=c, pool_name='a100', gpus=1); "
            "application_create(actor=u, team=t, cluster=c, name='web', "
            "spec={'route_prefix': '/t/web', 'import_path': 'examples.hello:app'})"
        )
        made = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", shell],
            cwd=ROOT,
            env=prod_env,
            capture_output=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr.decode()[-2000:]
        pushed = 'controlplane_pushes_total{cluster="c",outcome="succeeded"} 1.0'
        deadline = time.monotonic() + 60
        metrics = ""
        while time.monotonic() < deadline and pushed not in metrics:
            metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            time.sleep(0.5)
        assert pushed in metrics, metrics[-3000:]  # counted in the worker, shown by the web
        assert "controlplane_push_seconds_count" in metrics and "controlplane_tasks_total" in metrics
        own = requests.get(f"http://127.0.0.1:{worker_port}/metrics", timeout=5).text
        assert pushed in own
        time.sleep(3)
        for name in ("worker", "beat"):
            assert procs[name].poll() is None, f"{name} exited: {procs[name].stdout.read().decode()[-2000:]}"
    finally:
        for p in procs.values():
            os.killpg(p.pid, signal.SIGTERM)
        outputs = {name: p.communicate(timeout=30)[0].decode() for name, p in procs.items()}
        ray.stop()
    logs = {}
    for name, output in outputs.items():
        lines = [line for line in output.splitlines() if line.strip()]
        # Celery prints (not logs) one line when SIGTERM stops it: "worker: Warm shutdown (MainProcess)".
        lines = [line for line in lines if not line.startswith("worker: Warm shutdown")]
        # Every line a process logs is one JSON object with the same fields (no banner, no plain text).
        bad = [line for line in lines if not line.startswith("{")]
        assert not bad, (name, bad[:5])
        logs[name] = [json.loads(line) for line in lines]
        for entry in logs[name]:
            assert {"ts", "level", "logger", "message", "request_id"} <= set(entry), (name, entry)
    assert any("ready" in e["message"].lower() for e in logs["worker"]), outputs["worker"][-2000:]
    assert any("Starting" in e["message"] for e in logs["beat"]), outputs["beat"][-2000:]
    task_lines = [e for e in logs["worker"] if e["request_id"].startswith("task-")]
    assert task_lines, "a task's log lines carry its id"
    not_found = next(entry for entry in logs["web"] if "no-such-page" in entry["message"])
    assert not_found["request_id"] == "req-json-1" and not_found["level"] == "WARNING"


@pytest.mark.django_db
def test_readyz_reports_what_is_down(client, settings, monkeypatch):
    from kombu import Connection

    from controlplane.celery import app

    # A broker that refuses connections, without touching the app's configuration that other tests use.
    monkeypatch.setattr(app, "connection", lambda *args, **kwargs: Connection("redis://127.0.0.1:9/0"))
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.json()["checks"]["broker"].startswith("unavailable")
    assert resp.json()["checks"]["database"] == "ok"


def test_the_optional_prometheus_is_wired_in_compose_and_kubernetes():
    import shutil
    import subprocess

    from tests.conftest import require

    service = COMPOSE["services"]["prometheus"]
    assert service["profiles"] == ["prometheus"]  # off unless asked for
    config = service["volumes"][0].split(":")[0]
    assert (ROOT / config).is_file()
    promtool = shutil.which("promtool")
    if not promtool:
        require("promtool", "apt-get install prometheus")
    checked = subprocess.run([promtool, "check", "config", str(ROOT / config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    doc = yaml.safe_load(Path(ROOT / config).read_text())
    sd = doc["scrape_configs"][0]["http_sd_configs"][0]["url"]
    assert sd.endswith("/api/prometheus/sd")  # Ray's own service discovery
    # Kubernetes: Debian's promtool is built without Kubernetes discovery, so the config is checked for what the
    # control plane relies on: Ray's pods kept by their ray.io/cluster label, which becomes ray_cluster.
    cm = next(d for d in K8S_PROMETHEUS if d["kind"] == "ConfigMap")
    relabel = yaml.safe_load(cm["data"]["prometheus.yml"])["scrape_configs"][0]["relabel_configs"]
    assert {"source_labels": ["__meta_kubernetes_pod_label_ray_io_cluster"], "target_label": "ray_cluster"} in relabel
    deployment = next(d for d in K8S_PROMETHEUS if d["kind"] == "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "prometheus"
