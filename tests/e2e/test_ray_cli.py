"""Ray 2.60's own, unmodified `serve` CLI and ServeSubmissionClient against the control plane's per-team Ray API,
for two teams on one real Ray cluster, with Ray's token authentication (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN).

Both teams deploy an app of the same name from a file shaped as Ray's docs write it (routes at "/" and "/calc");
neither sees nor removes the other's; a deploy over quota fails with the reason printed by Ray's CLI; `serve
status` shows RUNNING once Ray runs it; `serve config` shows the team's names; `serve shutdown` removes one team's
apps only. The extra time of a `serve deploy` through the control plane against Ray directly is printed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from apps.applications.models import Application
from apps.clusters.models import Cluster
from apps.teams.services import issue_token
from tests.conftest import wait_for, wait_for_steady_proxies
from tests.e2e.test_admission_ray import register_token_ray, token_ray  # noqa: F401 - the token-auth Ray fixture

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

SERVE = str(Path(sys.executable).parent / "serve")

DOCS_SHAPED = """\
applications:
  - name: fruit
    route_prefix: /
    import_path: examples.hello:app
    deployments:
      - name: Hello
        num_replicas: 1
        ray_actor_options: {num_cpus: 0.1}
  - name: calc
    route_prefix: /calc
    import_path: examples.hello:app
    deployments:
      - name: Hello
        ray_actor_options: {num_cpus: 0.1, num_gpus: 0.5}
"""

GREEDY = """\
applications:
  - name: fruit
    route_prefix: /
    import_path: examples.hello:app
    deployments:
      - name: Hello
        num_replicas: 4
        ray_actor_options: {num_cpus: 0.1, num_gpus: 1}
"""


def serve_cli(*args: str, token: str, tmp_path: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "HOME": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([SERVE, *args], capture_output=True, text=True, env=env, timeout=180, input=stdin)


def test_ray_s_own_cli_and_sdk_work_per_team(ray_env, live_server, alice, bob, team_a, team_b, grant, tmp_path):
    grant(team_a, ray_env, "1")
    grant(team_b, ray_env, "1")
    token_a = issue_token(user=alice, name="ray-cli")[1]
    token_b = issue_token(user=bob, name="ray-cli")[1]
    address_a = f"{live_server.url}/ray/team-a/{ray_env.name}"
    address_b = f"{live_server.url}/ray/team-b/{ray_env.name}"
    config = tmp_path / "serve.yaml"
    config.write_text(DOCS_SHAPED)

    started = time.monotonic()
    deployed = serve_cli("deploy", str(config), "--address", address_a, token=token_a, tmp_path=tmp_path)
    through_cp = time.monotonic() - started
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    assert "Sent deploy request successfully" in deployed.stdout + deployed.stderr
    deployed_b = serve_cli("deploy", str(config), "--address", address_b, token=token_b, tmp_path=tmp_path)
    assert deployed_b.returncode == 0, deployed_b.stderr + deployed_b.stdout

    def running(address: str, token: str) -> dict | None:
        out = serve_cli("status", "--address", address, token=token, tmp_path=tmp_path)
        assert out.returncode == 0, out.stderr
        status = yaml.safe_load(out.stdout)
        apps = status.get("applications") or {}
        return status if apps and all(a.get("status") == "RUNNING" for a in apps.values()) else None

    status_a = wait_for(lambda: running(address_a, token_a), timeout=240, interval=2, what="team A RUNNING")
    assert set(status_a["applications"]) == {"fruit", "calc"}  # its names, and nothing of team B's
    status_b = wait_for(lambda: running(address_b, token_b), timeout=240, interval=2, what="team B RUNNING")
    assert set(status_b["applications"]) == {"fruit", "calc"}

    # Both answer on Ray, each under its team's namespace.
    serve = ray_env.serve_url
    wait_for_steady_proxies(ray_env)
    for path in ("/team-a", "/team-a/calc", "/team-b", "/team-b/calc"):
        wait_for(lambda p=path: requests.get(f"{serve}{p}", timeout=10).status_code == 200, what=f"{path} answering")

    shown = serve_cli("config", "--address", address_a, token=token_a, tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    configs = list(yaml.safe_load_all(shown.stdout))
    assert {c["name"] for c in configs} == {"fruit", "calc"}
    assert {c["route_prefix"] for c in configs} == {"/team-a", "/team-a/calc"}

    # Over quota: Ray's CLI fails and prints the reason; nothing changes.
    greedy = tmp_path / "greedy.yaml"
    greedy.write_text(GREEDY)
    refused = serve_cli("deploy", str(greedy), "--address", address_a, token=token_a, tmp_path=tmp_path)
    assert refused.returncode != 0
    printed = refused.stderr + refused.stdout
    assert "status code 400" in printed and "applications[0]" in printed and "GPU" in printed, printed
    assert set(running(address_a, token_a)["applications"]) == {"fruit", "calc"}

    # A wrong token: Ray's CLI says what Ray would say.
    wrong = serve_cli("status", "--address", address_a, token="not-a-token", tmp_path=tmp_path)
    assert wrong.returncode != 0 and "Invalid authentication token" in wrong.stderr + wrong.stdout

    # The Python SDK, as a script would use it.
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    sdk = ServeSubmissionClient(address_b, headers={"Authorization": f"Bearer {token_b}"})
    assert set(sdk.get_serve_details()["applications"]) == {"fruit", "calc"}
    sdk.deploy_applications({"applications": yaml.safe_load(DOCS_SHAPED)["applications"][:1]})
    wait_for(
        lambda: set(sdk.get_serve_details()["applications"]) == {"fruit"}, timeout=120, what="team B's calc removed"
    )

    # Shutdown removes team A's apps only.
    down = serve_cli("shutdown", "-y", "--address", address_a, token=token_a, tmp_path=tmp_path)
    assert down.returncode == 0, down.stderr
    ray_apps = f"{ray_env.dashboard_url}/api/serve/applications/"
    wait_for(
        lambda: set(requests.get(ray_apps, timeout=10).json().get("applications") or {}) == {"team-b--fruit"},
        timeout=180,
        interval=2,
        what="only team B's app left on Ray",
    )
    assert requests.get(f"{serve}/team-b", timeout=10).status_code == 200

    # The same deploy against Ray directly (the merged config Ray already runs: no change for Ray either way).
    merged = requests.get(ray_apps, timeout=10).json()["applications"]["team-b--fruit"]["deployed_app_config"]
    direct_file = tmp_path / "direct.yaml"
    direct_file.write_text(yaml.safe_dump({"applications": [merged]}))
    started = time.monotonic()
    direct = subprocess.run(
        [SERVE, "deploy", str(direct_file), "--address", ray_env.dashboard_url],
        capture_output=True,
        text=True,
        timeout=180,
        env={k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"},
    )
    against_ray = time.monotonic() - started
    assert direct.returncode == 0, direct.stderr
    print(f"\nserve deploy: through the control plane {through_cp:.2f} s, against Ray directly {against_ray:.2f} s")

    # The PUT alone (the CLI's own start-up left out), five times each, the same unchanged config both ways.
    def median_put(client: ServeSubmissionClient, config: dict) -> float:
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            client.deploy_applications(config)
            times.append(time.monotonic() - t0)
        return sorted(times)[2]

    team_config = {"applications": yaml.safe_load(DOCS_SHAPED)["applications"][:1]}
    via_cp = median_put(sdk, team_config)
    via_ray = median_put(ServeSubmissionClient(ray_env.dashboard_url), {"applications": [merged]})
    print(f"PUT median of 5: control plane {via_cp * 1000:.0f} ms, Ray {via_ray * 1000:.0f} ms")


def test_through_the_control_plane_to_a_token_ray_and_its_external_scaler(
    token_ray,  # noqa: F811
    live_server,
    celery_worker,
    make_cluster,
    alice,
    team_a,
    tmp_path,
):
    """The whole chain with token authentication at both ends: Ray's CLI sends the team's token to the control
    plane, which sends the cluster's own token to a Ray started with RAY_AUTH_MODE=token. There, and only there,
    an app may enable the external scaler: its scale calls are admitted by the control plane, then Ray scales."""
    ray, ray_token = token_ray
    cluster = register_token_ray(make_cluster, ray, ray_token)
    token = issue_token(user=alice, name="ray-cli")[1]
    address = f"{live_server.url}/ray/team-a/{cluster.name}"
    config = tmp_path / "scaled.yaml"
    config.write_text(
        "applications:\n"
        "  - name: ranker\n"
        "    import_path: examples.hello:app\n"
        "    external_scaler_enabled: true\n"
        "    deployments:\n"
        "      - name: Hello\n"
        "        num_replicas: 1\n"
        "        ray_actor_options: {num_cpus: 0.1}\n"
    )
    deployed = serve_cli("deploy", str(config), "--address", address, token=token, tmp_path=tmp_path)
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout

    def replicas_running() -> int:
        out = serve_cli("status", "--address", address, token=token, tmp_path=tmp_path)
        app = (yaml.safe_load(out.stdout).get("applications") or {}).get("ranker") or {}
        if app.get("status") != "RUNNING":
            return 0
        details = requests.get(f"{ray.dashboard_url}/api/serve/applications/", headers=ray.auth_headers, timeout=10)
        replicas = details.json()["applications"]["team-a--ranker"]["deployments"]["Hello"]["replicas"]
        return sum(1 for r in replicas if r["state"] == "RUNNING")

    wait_for(lambda: replicas_running() == 1, timeout=240, interval=2, what="ranker RUNNING with 1 replica")
    assert requests.get(f"{ray.serve_url}/team-a?name=t", timeout=10).json() == {"message": "hello, t"}

    scale = f"{address}/api/v1/applications/ranker/deployments/Hello/scale"
    started = time.monotonic()
    answer = requests.post(
        scale, json={"target_num_replicas": 2}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert answer.status_code == 200 and "Scaling request received" in answer.json()["message"], answer.text
    wait_for(lambda: replicas_running() == 2, timeout=180, interval=1, what="Ray scaled ranker to 2")
    print(f"\nexternal scaler through the control plane: 2 replicas RUNNING {time.monotonic() - started:.1f} s after")
    app = Application.objects.get(name="ranker")
    assert app.current_revision.spec["deployments"][0]["num_replicas"] == 2
    # Past the team's replica cap: refused by the control plane, and Ray still runs 2.
    Cluster.objects.filter(pk=cluster.pk).update(team_max_replicas=2)
    refused = requests.post(
        scale, json={"target_num_replicas": 3}, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert refused.status_code == 400 and "replicas" in refused.json()["error"], refused.text
    assert replicas_running() == 2
