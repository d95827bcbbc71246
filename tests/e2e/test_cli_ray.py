"""``servectl status`` waits with progress until Ray settles an app, against the real test cluster."""

from __future__ import annotations

import pytest

from tests.test_cli import run  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.ray, pytest.mark.django_db(transaction=True)]

FILE = """
applications:
  - name: good
    route_prefix: /team-a/good
    import_path: examples.hello:app
    deployments:
      - name: Hello
        num_replicas: 1
        ray_actor_options: {num_cpus: 0.1, num_gpus: 1}
  - name: bad
    route_prefix: /team-a/bad
    import_path: examples.broken:app
"""


def test_status_waits_until_running_and_exits_2_on_deploy_failed(run, ray_env, alice, team_a, grant):  # noqa: F811
    from apps.teams.services import issue_token

    grant(team_a, ray_env, "2")
    _, token = issue_token(user=alice, name="ci")
    applied = run(
        "apply", "-f", "-", "--team", "team-a", "--cluster", str(ray_env.pk), stdin=FILE, SERVECTL_TOKEN=token
    )
    assert applied.returncode == 0, applied.stderr
    good = run("status", "team-a/good", "--timeout", "180", SERVECTL_TOKEN=token)
    assert good.returncode == 0, good.stderr
    assert "team-a/good: running" in good.stdout
    assert "s] team-a/good:" in good.stderr  # progress lines while it deployed
    bad = run("status", "bad", "--team", "team-a", "--timeout", "180", SERVECTL_TOKEN=token)
    assert bad.returncode == 2, (bad.stdout, bad.stderr)
    assert "deploy_failed" in bad.stdout and "cannot be imported on purpose" in bad.stdout
