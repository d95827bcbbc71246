"""``servectl`` run as a subprocess (the installed console script) against the live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apps.applications.models import Application
from apps.quotas.models import StarterGrant
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

SERVECTL = shutil.which("servectl", path=str(Path(sys.executable).parent)) or "servectl"

FILE = """
applications:
  - name: fruit_app
    route_prefix: /team-a/fruit
    import_path: fruit.deployment_graph
    deployments:
      - name: MangoStand
        num_replicas: 2
        ray_actor_options: {num_cpus: 0.1, num_gpus: 0.5}
"""


@pytest.fixture
def run(live_server, tmp_path):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "SERVECTL_URL": live_server.url}
    env.pop("SERVECTL_TOKEN", None)

    def servectl(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SERVECTL, *args], input=stdin, capture_output=True, text=True, env={**env, **extra}, timeout=120
        )

    servectl.env = env  # for a test that runs servectl itself (a login that waits for the browser)
    return servectl


@pytest.fixture
def world(alice, team_a, cluster, grant, tmp_path):
    grant(team_a, cluster, "2")
    path = tmp_path / "serve.yaml"
    path.write_text(FILE)
    return {"cluster": cluster, "file": str(path)}


def test_login_keeps_the_token_private_then_apply_export_and_list(run, world, tmp_path):
    assert run("apps", "list").returncode != 0  # not logged in yet
    login = run("login", "--username", "alice", SERVECTL_PASSWORD=PASSWORD)
    assert login.returncode == 0, login.stderr
    config = tmp_path / "config" / "servectl" / "config.json"
    assert oct(config.stat().st_mode & 0o777) == "0o600" and json.loads(config.read_text())["token"]

    cluster = str(world["cluster"].pk)
    dry = run("apply", "-f", world["file"], "--team", "team-a", "--cluster", "prod-1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "create  fruit_app" in dry.stdout and "would change" in dry.stdout
    assert not Application.objects.exists()

    applied = run("apply", "-f", world["file"], "--team", "team-a", "--cluster", cluster, "-o", "json")
    assert applied.returncode == 0 and json.loads(applied.stdout)["changed"] == 1
    again = run("apply", "-f", "-", "--team", "team-a", "--cluster", cluster, stdin=FILE)
    assert again.returncode == 0 and "unchanged  fruit_app" in again.stdout and "0 app(s) changed" in again.stdout

    exported = run("export", "--team", "team-a", "--cluster", cluster)
    assert exported.returncode == 0 and "name: fruit_app" in exported.stdout

    listed = run("apps", "list", "--team", "team-a", "-o", "json")
    assert [a["name"] for a in json.loads(listed.stdout)] == ["fruit_app"]
    status = run("status", "team-a/fruit_app", "--no-wait", "-o", "json")
    assert status.returncode == 0 and json.loads(status.stdout)["state"] == "pending"


def test_refusals_are_printed_field_by_field_with_exit_code_1(run, world, alice):
    from apps.teams.services import issue_token

    _, token = issue_token(user=alice, name="ci")
    bad = FILE.replace("num_replicas: 2", "nm_replicas: 2")
    out = run("apply", "-f", "-", "--team", "team-a", "--cluster", "prod-1", stdin=bad, SERVECTL_TOKEN=token)
    assert out.returncode == 1
    assert "applications[0].deployments[0].nm_replicas" in out.stderr
    too_big = FILE.replace("num_gpus: 0.5", "num_gpus: 5")
    out = run("apply", "-f", "-", "--team", "team-a", "--cluster", "prod-1", stdin=too_big, SERVECTL_TOKEN=token)
    assert out.returncode == 1 and "quota" in out.stderr and "needs 10 GPU" in out.stderr
    assert not Application.objects.exists()
    missing = run("status", "nope", "--team", "team-a", SERVECTL_TOKEN=token)
    assert missing.returncode == 1 and "no application 'nope'" in missing.stderr


def test_the_getting_started_page_commands_run_as_shown(run, live_server, make_user, staff, make_cluster, tmp_path):
    """A new user with a starter grant: the page's terminal commands, copied as they are, log in and deploy."""
    import html
    import re

    from django.test import Client

    cluster = make_cluster(name="sandbox")
    StarterGrant.objects.filter(pk=cluster.pk).update(starter_pool="a100", starter_gpus="0.5", starter_days=7)
    newcomer = make_user("newcomer")
    from apps.teams.services import team_create

    team_create(actor=newcomer, slug="newbies", name="Newbies")
    page = Client()
    page.force_login(newcomer)
    text = page.get("/welcome/", HTTP_HOST=live_server.url.split("//")[1]).content.decode()
    assert "starter grant of 0.5 GPU in sandbox/a100" in text
    block = html.unescape(re.search(r'<pre[^>]*id="terminal-commands"><code>(.*?)</code></pre>', text, re.S).group(1))
    lines = block.splitlines()
    login, apply, status = lines[0], lines[-2], lines[-1]
    serve_file = "\n".join(lines[2 : lines.index("EOF")]) + "\n"
    assert login == f"servectl login --url {live_server.url} --username newcomer"
    assert apply == "servectl apply -f serve.yaml --team newbies --cluster sandbox"
    options = yaml.safe_load(serve_file)["applications"][0]["deployments"][0]["ray_actor_options"]
    assert options == {"num_cpus": 0.1, "num_gpus": 0.5}  # the starter grant's share, as the one-click template
    (tmp_path / "serve.yaml").write_text(serve_file)
    done = run(*login.split()[1:], SERVECTL_PASSWORD=PASSWORD)
    assert done.returncode == 0, done.stderr
    applied = run(*[a if a != "serve.yaml" else str(tmp_path / "serve.yaml") for a in apply.split()[1:]])
    assert applied.returncode == 0, applied.stderr + applied.stdout
    app = Application.objects.get(team__slug="newbies", name="hello")
    assert app.current_revision.spec["import_path"] == "examples.hello:app"
    shown = run(*status.split()[1:], "--no-wait")
    assert shown.returncode in (0, 1, 3) and "hello" in shown.stdout + shown.stderr, shown.stdout + shown.stderr


def test_rollout_start_status_pause_promote_and_a_rolled_back_exit_code(run, world, alice, tmp_path):
    from apps.rollouts.models import Rollout
    from apps.teams.services import issue_token

    _, token = issue_token(user=alice, name="ci")
    cluster = str(world["cluster"].pk)
    small = FILE.replace("num_replicas: 2", "num_replicas: 1")
    assert (
        run("apply", "-f", "-", "--team", "team-a", "--cluster", cluster, stdin=small, SERVECTL_TOKEN=token).returncode
        == 0
    )
    app = Application.objects.get(name="fruit_app")
    Application.objects.filter(pk=app.pk).update(deployed_revision=app.current_revision, state="running")
    spec = yaml.safe_load(small)["applications"][0]
    new = tmp_path / "v2.yaml"
    new.write_text(yaml.safe_dump({**spec, "args": {"colour": "green"}}))

    out = run(
        "rollout",
        "start",
        "team-a/fruit_app",
        "-f",
        str(new),
        "--steps",
        "50,100",
        "--step-seconds",
        "20",
        SERVECTL_TOKEN=token,
    )
    assert out.returncode == 0, out.stderr
    assert "r1 -> r2: running (start), 0% to the new version" in out.stdout
    r = Rollout.objects.get()
    assert (r.steps, r.step_seconds, r.to_revision.spec["args"]) == ([50.0, 100.0], 20, {"colour": "green"})
    again = run("rollout", "start", "fruit_app", "--team", "team-a", "--revision", "2", SERVECTL_TOKEN=token)
    assert again.returncode == 1 and "under way" in again.stderr
    Rollout.objects.filter(pk=r.pk).update(phase="split", step_index=0, weight=50)
    paused = run("rollout", "pause", "team-a/fruit_app", "-o", "json", SERVECTL_TOKEN=token)
    assert paused.returncode == 0 and json.loads(paused.stdout)["state"] == "paused"
    status = run("rollout", "status", "team-a/fruit_app", SERVECTL_TOKEN=token)
    assert "paused (split), step 1 of 2, 50% to the new version" in status.stdout
    assert run("rollout", "resume", "team-a/fruit_app", SERVECTL_TOKEN=token).returncode == 0
    promoted = run("rollout", "promote", "team-a/fruit_app", SERVECTL_TOKEN=token)
    assert promoted.returncode == 0 and "running (promote), 100% to the new version" in promoted.stdout
    Rollout.objects.filter(pk=r.pk).update(state="rolled_back", phase="done", reason="step 1 (50%): 5xx 20%")
    waited = run("rollout", "status", "team-a/fruit_app", "--wait", SERVECTL_TOKEN=token)
    assert waited.returncode == 2 and "step 1 (50%): 5xx 20%" in waited.stdout
