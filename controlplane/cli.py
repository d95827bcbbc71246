"""``servectl``: the control plane from a terminal or a CI pipeline.

It talks only to the REST API (it needs none of the server's settings). The server URL and token come from
``SERVECTL_URL`` and ``SERVECTL_TOKEN`` when set, else from the file ``servectl login`` writes
(``$XDG_CONFIG_HOME/servectl/config.json``, readable by its owner only).

Exit codes: 0 success; 1 refused or failed (the reasons are printed); 2 an app ended DEPLOY_FAILED or UNHEALTHY, or
a rollout rolled back or was aborted; 3 still not settled (or a rollout still under way) when ``--timeout`` ran out.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import requests
import yaml

SETTLED = {"running", "deploy_failed", "unhealthy"}
FAILED = {"deploy_failed", "unhealthy"}


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "servectl" / "config.json"


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Token {token}", "User-Agent": "servectl/1"})

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, self.url + path, timeout=60, **kwargs)
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {self.url}: {type(exc).__name__}") from exc

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.call(method, path, **kwargs)
        if resp.status_code >= 400:
            fail(resp)
        return resp.json() if resp.content else None


def fail(resp: requests.Response) -> None:
    """Print the server's reasons, field by field, and exit 1."""
    try:
        body = resp.json()
    except ValueError:
        body = {"detail": resp.text[:500]}
    click.echo(f"Refused (HTTP {resp.status_code}):", err=True)
    if isinstance(body, dict):
        for field, messages in body.items():
            if field == "quota_detail":
                continue
            for message in messages if isinstance(messages, list) else [messages]:
                click.echo(
                    f"  {field}: {message}" if field not in ("detail", "non_field_errors") else f"  {message}", err=True
                )
    else:
        click.echo(f"  {body}", err=True)
    sys.exit(1)


def api_from_env() -> Api:
    url, token = os.environ.get("SERVECTL_URL"), os.environ.get("SERVECTL_TOKEN")
    if not (url and token):
        try:
            saved = json.loads(config_path().read_text())
        except (OSError, ValueError):
            saved = {}
        url, token = url or saved.get("url"), token or saved.get("token")
    if not (url and token):
        raise click.ClickException("not logged in: run `servectl login`, or set SERVECTL_URL and SERVECTL_TOKEN")
    return Api(url, token)


def output(data: Any, fmt: str, human: Any) -> None:
    if fmt == "json":
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    elif fmt == "yaml":
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    else:
        human(data)


def resolve_cluster(api: Api, cluster: str) -> int:
    if cluster.isdigit():
        return int(cluster)
    found = [
        c for c in api.json("GET", "/api/v1/clusters/", params={"page_size": 500})["results"] if c["name"] == cluster
    ]
    if not found:
        raise click.ClickException(f"no cluster named {cluster!r}")
    return int(found[0]["id"])


OUTPUT = click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)


@click.group()
def cli() -> None:
    """Deploy and watch Ray Serve applications through the control plane."""


@cli.command()
@click.option(
    "--url", envvar="SERVECTL_URL", required=True, prompt="Control plane URL", help="e.g. http://127.0.0.1:8088"
)
@click.option("--username", help="Sign in with a username and password (prompted for when not given)")
@click.option("--password", envvar="SERVECTL_PASSWORD", help="Better from SERVECTL_PASSWORD or the prompt")
@click.option(
    "--browser",
    is_flag=True,
    help="Sign in through the dashboard in your browser (single sign-on accounts have no password)",
)
@click.option("--no-open", is_flag=True, help="With --browser: print the link, do not open a browser")
def login(url: str, username: str | None, password: str | None, browser: bool, no_open: bool) -> None:
    """Get an API token (by password, or allowed in the browser) and keep it in your config file."""
    url = url.rstrip("/")
    if browser:
        token, who = _browser_login(url, open_browser=not no_open)
    else:
        username = username or click.prompt("Username")
        password = password or click.prompt("Password", hide_input=True)
        try:
            resp = requests.post(
                url + "/api/v1/auth/token/", json={"username": username, "password": password}, timeout=30
            )
        except requests.RequestException as exc:
            raise click.ClickException(f"cannot reach {url}: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            fail(resp)
        token, who = resp.json()["token"], username
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token}, fh)
    click.echo(f"Logged in to {url}{f' as {who}' if who else ''}; the token is in {path}.")


def _browser_login(url: str, open_browser: bool) -> tuple[str, str]:
    try:
        resp = requests.post(url + "/api/v1/auth/cli-login/", timeout=30, headers={"User-Agent": "servectl/1"})
    except requests.RequestException as exc:
        raise click.ClickException(f"cannot reach {url}: {type(exc).__name__}") from exc
    if resp.status_code != 201:
        fail(resp)
    started = resp.json()
    click.echo("Open this link, signed in to the dashboard, and type this code there to allow the sign-in:")
    click.echo(f"  {started['verify_url']}")
    click.echo(f"  code: {started['user_code']}")
    if open_browser:
        import webbrowser

        webbrowser.open(started["verify_url"])
    deadline = time.monotonic() + started["expires_in"]
    while time.monotonic() < deadline:
        time.sleep(started.get("interval", 2))
        try:
            answer = requests.post(
                f"{url}/api/v1/auth/cli-login/{started['id']}/token/",
                json={"poll_secret": started["poll_secret"]},
                timeout=30,
            )
        except requests.RequestException:
            continue  # the server may be restarting; keep waiting until the link expires
        if answer.status_code == 200:
            return answer.json()["token"], ""
        if answer.status_code != 202:
            fail(answer)
    raise click.ClickException("the link expired before it was allowed: run servectl login --browser again")


@cli.command()
@click.option(
    "-f", "--file", "path", type=click.File("rb"), required=True, help="Serve config file (YAML or JSON); - for stdin"
)
@click.option("--team", required=True)
@click.option("--cluster", required=True, help="Cluster id or name")
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing")
@click.option("--prune", is_flag=True, help="Delete the team's apps on the cluster that the file does not list")
@OUTPUT
def apply(path: Any, team: str, cluster: str, dry_run: bool, prune: bool, fmt: str) -> None:
    """Apply a standard Serve config file to a team's apps on one cluster."""
    api = api_from_env()
    cluster_id = resolve_cluster(api, cluster)
    params = {"cluster": cluster_id, "dry_run": str(dry_run).lower(), "prune": str(prune).lower()}
    result = api.json(
        "POST",
        f"/api/v1/teams/{team}/serve-config/",
        params=params,
        data=path.read(),
        headers={"Content-Type": "application/yaml"},
    )

    def human(r: dict) -> None:
        for warning in r.get("warnings", []):
            click.echo(f"warning: {warning}", err=True)
        for step in r["plan"]:
            click.echo(f"{step['action']:>9}  {step['app']}")
            for d in step.get("diff", []) if step["action"] == "update" else []:
                click.echo(f"             {d['field']}: {d['observed']!r} -> {d['desired']!r}")
        verb = "would change" if r["dry_run"] else "changed"
        click.echo(f"{r['changed']} app(s) {verb}.")

    output(result, fmt, human)


@cli.command()
@click.option("--team", required=True)
@click.option("--cluster", required=True, help="Cluster id or name")
@click.option("-o", "--output", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
def export(team: str, cluster: str, fmt: str) -> None:
    """Print the team's apps on a cluster as a Serve config file that `serve deploy` accepts."""
    api = api_from_env()
    document = api.json("GET", f"/api/v1/teams/{team}/serve-config/", params={"cluster": resolve_cluster(api, cluster)})
    output(document, fmt, None)


@cli.group()
def apps() -> None:
    """Applications."""


@apps.command("list")
@click.option("--team")
@click.option("--cluster", help="Cluster id or name")
@OUTPUT
def apps_list(team: str | None, cluster: str | None, fmt: str) -> None:
    """List the applications you can see."""
    api = api_from_env()
    params: dict[str, Any] = {"page_size": 500}
    if team:
        params["team"] = team
    if cluster:
        params["cluster"] = resolve_cluster(api, cluster)
    rows = api.json("GET", "/api/v1/applications/", params=params)["results"]

    def human(items: list) -> None:
        if not items:
            click.echo("No applications.")
        for a in items:
            click.echo(
                f"{a['id']:>5}  {a['team']}/{a['name']:<30} {a['state']:<14} r{a['revision']}  {a['route_prefix']}"
            )

    output(rows, fmt, human)


def find_app(api: Api, app: str, team: str | None) -> dict:
    if app.isdigit():
        return api.json("GET", f"/api/v1/applications/{app}/")
    if "/" in app and not team:
        team, app = app.split("/", 1)
    params: dict[str, Any] = {"page_size": 500, **({"team": team} if team else {})}
    found = [a for a in api.json("GET", "/api/v1/applications/", params=params)["results"] if a["name"] == app]
    if not found:
        raise click.ClickException(f"no application {app!r}" + (f" in team {team}" if team else ""))
    if len(found) > 1:
        raise click.ClickException(f"{app!r} is in several teams or clusters; give TEAM/NAME or the id")
    return found[0]


@cli.command()
@click.argument("app")
@click.option("--team")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the app settles")
@click.option("--timeout", type=float, default=600, show_default=True, help="Seconds to wait")
@OUTPUT
def status(app: str, team: str | None, wait: bool, timeout: float, fmt: str) -> None:
    """Show an app's state (APP: id, NAME or TEAM/NAME); wait until it settles, exiting 2 if it failed."""
    api = api_from_env()
    found = find_app(api, app, team)
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    last = ""
    interactive = sys.stderr.isatty() and fmt == "text"
    while True:
        current = api.json("GET", f"/api/v1/applications/{found['id']}/")
        state = current["state"]
        deployments = (current.get("status") or {}).get("deployments") or {}
        line = f"{current['team']}/{current['name']}: {state}" + "".join(
            f"  {name} {d.get('status', '')} {len(d.get('replicas') or [])}/{d.get('target_num_replicas') or '?'}"
            for name, d in deployments.items()
        )
        if wait and state not in SETTLED and time.monotonic() < deadline:
            if line != last or interactive:
                spent = int(time.monotonic() - started)
                click.echo(("\r" if interactive else "") + f"[{spent:>3}s] {line}", nl=not interactive, err=True)
                last = line
            time.sleep(1)
            continue
        break
    if interactive:
        click.echo("", err=True)

    def human(a: dict) -> None:
        click.echo(line)
        if a.get("status_message") and a["state"] in FAILED:
            click.echo(a["status_message"])
        for d in a.get("config_diff") or []:
            click.echo(f"  differs: {d['field']}: asked {d['desired']!r}, Ray runs {d['observed']!r}")

    output(current, fmt, human)
    if state in FAILED:
        sys.exit(2)
    if wait and state not in SETTLED:
        click.echo(f"still {state} after {timeout:g} s", err=True)
        sys.exit(3)


@cli.group()
def rollout() -> None:
    """Canary rollouts: a new version beside the running one, a growing share of traffic, rolled back on its own
    when its 5xx share or p95 latency leaves the running version's."""


def _rollout_line(r: dict) -> str:
    where = f"step {r['step']} of {len(r['steps'])}, " if r["phase"] == "split" else ""
    return (
        f"rollout {r['id']} of {r['team']}/{r['application_name']} r{r['from_revision']} -> r{r['to_revision']}: "
        f"{r['state']} ({r['phase']}), {where}{r['weight']:g}% to the new version"
    )


def _show_rollout(r: dict) -> None:
    click.echo(_rollout_line(r))
    for v in r.get("verdicts") or []:
        click.echo(f"  step {v['step'] + 1} ({v['weight']:g}%): {v['verdict']}  {v.get('reason', '')}")
    if r.get("reason"):
        click.echo(f"  {r['reason']}")


def _latest_rollout(api: Api, app: str, team: str | None) -> dict:
    found = find_app(api, app, team)
    rows = api.json("GET", f"/api/v1/applications/{found['id']}/rollouts/")["results"]
    if not rows:
        raise click.ClickException(f"{found['team']}/{found['name']} has no rollout")
    return rows[0]


def _follow(api: Api, r: dict, timeout: float) -> dict:
    """Print each change until the rollout is done; exit 2 when it did not succeed, 3 when time ran out."""
    deadline = time.monotonic() + timeout
    last = ""
    while r["phase"] != "done" and time.monotonic() < deadline:
        line = _rollout_line(r)
        if line != last:
            click.echo(line, err=True)
            last = line
        time.sleep(2)
        r = api.json("GET", f"/api/v1/rollouts/{r['id']}/")
    return r


def _exit_for(r: dict) -> None:
    if r["state"] in ("rolled_back", "aborted"):
        sys.exit(2)
    if r["phase"] != "done":
        sys.exit(3)


@rollout.command("start")
@click.argument("app")
@click.option("--team")
@click.option("--revision", type=int, help="Roll out an existing revision (its number)")
@click.option("-f", "--file", "path", type=click.File("r"), help="Or a new version: the app's spec in YAML or JSON")
@click.option("--steps", help="Percent of requests to the new version at each step, e.g. 5,10,20,50,100")
@click.option("--step-seconds", type=int, help="How long each step lasts while its gates pass (default 300)")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow it until it is done")
@click.option("--timeout", type=float, default=7500, show_default=True, help="Seconds to follow it")
@OUTPUT
def rollout_start(
    app: str,
    team: str | None,
    revision: int | None,
    path: Any,
    steps: str | None,
    step_seconds: int | None,
    wait: bool,
    timeout: float,
    fmt: str,
) -> None:
    """Start a rollout of APP (id, NAME or TEAM/NAME) to a revision or a spec file."""
    api = api_from_env()
    found = find_app(api, app, team)
    body: dict[str, Any] = {}
    if path is not None:
        spec = yaml.safe_load(path.read(1_000_001)[:1_000_000])
        if not isinstance(spec, dict):
            raise click.ClickException("the file must hold one application's spec (a mapping)")
        body["spec"] = {k: v for k, v in spec.items() if k != "name"}
    if revision is not None:
        body["revision"] = revision
    if steps:
        try:
            body["steps"] = [float(x) for x in steps.split(",") if x.strip()]
        except ValueError as exc:
            raise click.ClickException("--steps: percentages separated by commas, e.g. 5,10,50,100") from exc
    if step_seconds is not None:
        body["step_seconds"] = step_seconds
    r = api.json("POST", f"/api/v1/applications/{found['id']}/rollouts/", json=body)
    if wait:
        r = _follow(api, r, timeout)
    output(r, fmt, _show_rollout)
    if wait:
        _exit_for(r)


@rollout.command("status")
@click.argument("app")
@click.option("--team")
@click.option("--wait/--no-wait", default=False, show_default=True, help="Follow it until it is done")
@click.option("--timeout", type=float, default=7500, show_default=True, help="Seconds to follow it")
@OUTPUT
def rollout_status(app: str, team: str | None, wait: bool, timeout: float, fmt: str) -> None:
    """The latest rollout of APP: its phase, weight and each step's verdict."""
    api = api_from_env()
    r = _latest_rollout(api, app, team)
    if wait:
        r = _follow(api, r, timeout)
    output(r, fmt, _show_rollout)
    if wait:
        _exit_for(r)


def _rollout_action(verb: str, help_text: str) -> None:
    @rollout.command(verb, help=help_text)
    @click.argument("app")
    @click.option("--team")
    @OUTPUT
    def act(app: str, team: str | None, fmt: str) -> None:
        api = api_from_env()
        r = _latest_rollout(api, app, team)
        output(api.json("POST", f"/api/v1/rollouts/{r['id']}/{verb}/"), fmt, _show_rollout)


_rollout_action("pause", "Hold APP's rollout at its current weight.")
_rollout_action("resume", "Resume APP's paused rollout (its step is judged afresh).")
_rollout_action("promote", "Send all of APP's traffic to the new version now and make it the app's.")
_rollout_action("abort", "Send all of APP's traffic back to the running version now; the new one is removed.")


def main() -> None:
    cli(prog_name="servectl")


if __name__ == "__main__":
    main()
