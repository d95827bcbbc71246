"""Secrets never reach the audit log, logs, API answers, pages or error messages, and never sit in clear at rest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from apps.audit.models import AuditEvent
from apps.clusters.models import Cluster
from tests.fake_k8s import FakeKube

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ray-dashboard-token-S3CR3T-0123456789"
KUBE_SECRET = "kube-client-key-S3CR3T-abcdef"


def kubeconfig(server: str = "https://127.0.0.1:1") -> str:
    return (
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: c, cluster: {{server: '{server}', insecure-skip-tls-verify: true}}}}]\n"
        f"users: [{{name: u, user: {{token: {KUBE_SECRET}}}}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
    )


def leaked(text: str) -> bool:
    return TOKEN in text or KUBE_SECRET in text


def audit_text() -> str:
    return json.dumps(list(AuditEvent.objects.values("before", "after", "object_repr")), default=str)


def test_admin_save_records_one_event_with_secrets_redacted(staff):
    client = Client()
    client.force_login(staff)
    staff.is_superuser = True
    staff.save()
    resp = client.post(
        "/admin/clusters/cluster/add/",
        {
            "name": "adm",
            "kind": "kuberay",
            "dashboard_url": "http://127.0.0.1:1",
            "auth_token": TOKEN,
            "kubeconfig": kubeconfig(),
            "k8s_namespace": "ml",
            "k8s_name": "serve",
            "http_port": 8000,
            "drift_policy": "repair",
            "compaction_policy": "suggest",
            "compaction_threshold": 1,
            "metrics_targets": "[]",
            "metrics_source": "embedded",
            "starter_gpus": "0",
            "team_max_apps": 50,
            "team_max_replicas": 200,
            "prometheus_matchers": "{}",
            "runtime_env_policy": "{}",
            "ray_cluster_template": "{}",
            "pools-TOTAL_FORMS": 0,
            "pools-INITIAL_FORMS": 0,
        },
    )
    assert resp.status_code == 302, resp.context["adminform"].form.errors
    events = AuditEvent.objects.filter(action__in=["cluster.create", "cluster.update"])
    assert events.count() == 1  # one save, one event
    assert not leaked(audit_text())
    assert events.get().after["auth_token"] == "[redacted]" and events.get().after["kubeconfig"] == "[redacted]"


def test_api_answers_and_audit_never_carry_secrets(staff, api):
    client = api(staff)
    resp = client.post(
        "/api/v1/clusters/",
        {
            "name": "k",
            "kind": "kuberay",
            "dashboard_url": "http://127.0.0.1:1",
            "k8s_namespace": "ml",
            "k8s_name": "s",
            "auth_token": TOKEN,
            "kubeconfig": kubeconfig(),
        },
        format="json",
    )
    assert resp.status_code == 201 and not leaked(resp.content.decode())
    assert resp.json()["has_auth_token"] and resp.json()["has_kubeconfig"]
    cid = resp.json()["id"]
    patched = client.patch(f"/api/v1/clusters/{cid}/", {"auth_token": TOKEN + "x"}, format="json")
    assert patched.status_code == 200 and not leaked(patched.content.decode())
    for url in (f"/api/v1/clusters/{cid}/", "/api/v1/clusters/", "/api/v1/audit-events/", "/api/schema/"):
        assert not leaked(client.get(url).content.decode()), url
    assert not leaked(audit_text())
    # A refused kubeconfig is not repeated back.
    bad = client.patch(f"/api/v1/clusters/{cid}/", {"kubeconfig": f"not: [a kubeconfig {KUBE_SECRET}"}, format="json")
    assert bad.status_code == 400 and not leaked(bad.content.decode())


def test_pages_never_show_secrets(staff, make_cluster):
    cluster = make_cluster(name="p", auth_token=TOKEN)
    client = Client()
    client.force_login(staff)
    for url in (f"/clusters/{cluster.pk}/", "/clusters/", "/audit/"):
        assert not leaked(client.get(url).content.decode()), url


def test_task_errors_and_logs_never_carry_the_kubeconfig(make_cluster, caplog):
    from apps.clusters.models import SyncRun
    from apps.deploys.push import push_cluster
    from workers.clients.ray_dashboard import RayUnavailable

    kube = FakeKube().start()
    try:
        cluster = make_cluster(
            name="k8", kind="kuberay", k8s_namespace="ml", k8s_name="serve", kubeconfig=kubeconfig("http://127.0.0.1:9")
        )
        Cluster.objects.filter(pk=cluster.pk).update(desired_generation=1)
        with pytest.raises(RayUnavailable):
            push_cluster(cluster.pk)
    finally:
        kube.stop()
    errors = " ".join(SyncRun.objects.values_list("error", flat=True))
    assert errors and not leaked(errors)
    assert not leaked(caplog.text)


def test_log_lines_mask_credentials_in_every_process():
    code = (
        "import logging; log = logging.getLogger('leak'); "
        f"log.warning('calling with Authorization: Bearer {TOKEN}'); "
        f"log.warning('kubeconfig user token: {KUBE_SECRET}'); "
        "log.warning('password=hunter2hunter2')"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("[redacted]") == 3 and not leaked(out.stderr) and "hunter2hunter2" not in out.stderr


@pytest.mark.django_db(transaction=True)  # committed, so pg_dump's own connection sees the row
def test_a_database_dump_alone_reveals_no_secret(make_cluster, tmp_path):
    make_cluster(
        name="dump", auth_token=TOKEN, kind="kuberay", k8s_namespace="a", k8s_name="b", kubeconfig=kubeconfig()
    )
    assert Cluster.objects.get(name="dump").auth_token == TOKEN  # the application reads it back
    with connection.cursor() as cursor:
        cursor.execute("SELECT auth_token, kubeconfig FROM clusters_cluster WHERE name = 'dump'")
        raw = cursor.fetchone()
    assert raw[0].startswith("fernet:") and raw[1].startswith("fernet:") and not leaked(" ".join(raw))
    if connection.vendor == "sqlite":
        connection.close()  # flush WAL pages into the file the dump would copy
        name = connection.settings_dict["NAME"]
        data = b"".join(Path(p).read_bytes() for p in (name, f"{name}-wal") if os.path.exists(p))
        assert TOKEN.encode() not in data and KUBE_SECRET.encode() not in data
    else:
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            from tests.conftest import require

            require("pg_dump", "apt-get install postgresql-client")
        settings = connection.settings_dict
        out = subprocess.run(
            [
                pg_dump,
                "-h",
                settings["HOST"] or "127.0.0.1",
                "-p",
                str(settings["PORT"] or 5432),
                "-U",
                settings["USER"] or "postgres",
                "-t",
                "clusters_cluster",
                settings["NAME"],
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PGPASSWORD": settings["PASSWORD"] or ""},
        )
        assert out.returncode == 0, out.stderr
        assert "fernet:" in out.stdout and not leaked(out.stdout)
    dumped = subprocess.run(
        [sys.executable, "manage.py", "dumpdata", "clusters.cluster"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert not leaked(dumped.stdout)


def test_keys_rotate(make_cluster, settings):
    from cryptography.fernet import Fernet

    from apps.core import secrets

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEYS = [old]
    secrets._fernet.cache_clear()
    try:
        make_cluster(name="rot", auth_token=TOKEN)
        settings.FIELD_ENCRYPTION_KEYS = [new, old]
        secrets._fernet.cache_clear()
        assert Cluster.objects.get(name="rot").auth_token == TOKEN  # the old key still decrypts
        from django.core.management import call_command

        call_command("rotate_secrets", verbosity=0)
        settings.FIELD_ENCRYPTION_KEYS = [new]
        secrets._fernet.cache_clear()
        assert Cluster.objects.get(name="rot").auth_token == TOKEN  # now under the new key alone
    finally:
        secrets._fernet.cache_clear()
