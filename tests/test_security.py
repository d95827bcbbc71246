"""Security basics: deploy checks, secrets, CSRF on every form, rate limits, runtime_env policy."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client

from tests.conftest import PASSWORD, app_body

ROOT = Path(__file__).resolve().parents[1]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SECRET_KEY", "DEBUG", "DATABASE_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=120
    )


def test_check_deploy_passes_with_a_production_like_environment(tmp_path):
    env = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": "YnVpbGQtb25seS1ub3Qtc2VjcmV0LTAxMjM0NTY3ODk=",
        "ALLOWED_HOSTS": "cp.example.com",
        "CONTROLPLANE_VAR_DIR": str(tmp_path),
    }
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    result = manage("check", env={"DEBUG": "false", "CONTROLPLANE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_to_start_without_encryption_keys(tmp_path):
    env = {"DEBUG": "false", "SECRET_KEY": "x" * 50, "CONTROLPLANE_VAR_DIR": str(tmp_path)}
    result = manage("check", env=env)
    assert result.returncode != 0 and "FIELD_ENCRYPTION_KEYS must be set" in result.stderr


@pytest.mark.django_db
def test_every_form_refuses_a_post_without_csrf_token(alice, team_a, cluster, staff):
    from apps.applications.services import application_create

    app = application_create(
        actor=alice,
        team=team_a,
        cluster=cluster,
        name="x",
        spec={"route_prefix": "/team-a/x", "import_path": "examples.hello:app", "deployments": [{"name": "Hello"}]},
    )
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    urls = [
        "/accounts/login/",
        "/accounts/signup/",
        "/accounts/logout/",
        "/accounts/password_reset/",
        "/teams/new/",
        "/teams/team-a/members/",
        "/teams/team-a/quota/",
        "/teams/team-a/tokens/",
        "/teams/team-a/delete/",
        "/apps/new/",
        f"/apps/{app.pk}/edit/",
        f"/apps/{app.pk}/rollback/",
        f"/apps/{app.pk}/delete/",
        f"/clusters/{cluster.pk}/sync/",
        "/quota-requests/",
    ]
    for url in urls:
        assert client.post(url, {"name": "x"}).status_code == 403, url
    assert app.__class__.objects.get(pk=app.pk).deleted_at is None


@pytest.mark.django_db
def test_login_is_rate_limited(alice):
    client = Client()
    for _ in range(10):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    locked = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429 and b"Too many failed attempts" in locked.content
    other = Client()
    assert other.post("/accounts/login/", {"username": "bob-not-locked", "password": "x"}).status_code == 200


@pytest.mark.django_db
def test_token_endpoint_is_rate_limited(alice, api):
    client = api(None)
    codes = [
        client.post("/api/v1/auth/token/", {"username": "alice", "password": "wrong"}, format="json").status_code
        for _ in range(61)
    ]
    assert codes[:60] == [400] * 60 and codes[60] == 429


@pytest.mark.django_db
def test_runtime_env_policy_is_enforced_with_a_clear_refusal(team_a, cluster, grant, api, alice):
    grant(team_a, cluster, "4")
    cluster.runtime_env_policy = {"allowed_uri_prefixes": ["s3://ml-artifacts/"], "allow_pip": False}
    cluster.save()
    client = api(alice)
    body = app_body("team-a", cluster.pk, "x", runtime_env={"working_dir": "https://evil.example.com/code.zip"})
    resp = client.post("/api/v1/applications/", body, format="json")
    assert resp.status_code == 400
    assert "s3://ml-artifacts/" in resp.json()["runtime_env.working_dir"][0]
    resp = client.post(
        "/api/v1/applications/", app_body("team-a", cluster.pk, "x", runtime_env={"pip": ["torch"]}), format="json"
    )
    assert resp.status_code == 400 and "runtime_env.pip" in resp.json()
    ok = app_body("team-a", cluster.pk, "x", runtime_env={"working_dir": "s3://ml-artifacts/team-a/app.zip"})
    assert client.post("/api/v1/applications/", ok, format="json").status_code == 201


@pytest.mark.django_db
def test_secrets_do_not_reach_the_logs(caplog, staff, api):
    resp = api(staff).post(
        "/api/v1/clusters/",
        {
            "name": "secret-cluster",
            "kind": "ray",
            "dashboard_url": "http://127.0.0.1:1",
            "auth_token": "tok-abc-123-secret",
        },
        format="json",
    )
    assert resp.status_code == 201
    api(None).post("/api/v1/auth/token/", {"username": "platform", "password": "wrong-password-xyz"}, format="json")
    assert "tok-abc-123-secret" not in caplog.text and "wrong-password-xyz" not in caplog.text


@pytest.mark.django_db
def test_tokens_from_the_login_endpoint_expire_are_audited_and_listed(alice, settings):
    from django.test import Client
    from django.utils import timezone

    from apps.audit.models import AuditEvent
    from apps.teams.models import ApiToken
    from tests.conftest import PASSWORD

    settings.API_LOGIN_TOKEN_TTL_DAYS = 7
    api = Client()
    body = api.post("/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, content_type="application/json")
    assert body.status_code == 200 and body.json()["expires_at"]
    token = ApiToken.objects.get(user=alice)
    left = token.expires_at - timezone.now()
    assert timedelta(days=6, hours=23) < left <= timedelta(days=7)
    assert AuditEvent.objects.filter(action="token.create", actor=alice).exists()
    page = Client()
    page.force_login(alice)
    listing = page.get("/account/tokens/").content.decode()
    assert token.prefix in listing and token.name in listing
    page.post(f"/account/tokens/{token.pk}/revoke/")
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
    secret = body.json()["token"]
    assert api.get("/api/v1/teams/", HTTP_AUTHORIZATION=f"Token {secret}").status_code == 401
