"""What an application in rollout runs on Ray: the Serve applications of each phase.

Serve has no weighted routing between two applications, so the control plane places its own small ingress, the
splitter (``workers/on_cluster/splitter.py``), at the app's route and runs the two versions as two applications at
internal routes. Every change of route below is one Serve applies in place (a route prefix is not part of an
application's code version: no replica restarts), and the splitter's weight is a ``user_config`` it applies by
``reconfigure``, so no step drops a request:

- ``start``: the app as it runs, at its route; the new version (``<app>@canary``) and the splitter (``<app>@split``,
  weight 0) start at internal routes, taking no traffic yet.
- ``split``: the splitter takes the app's route, the app moves to its internal stable route: requests reach the
  running replicas through the splitter, and the new version gets ``weight`` percent.
- ``promote``: the splitter sends everything to the new version while the app itself is redeployed with the new
  revision at its internal route (it serves nothing meanwhile).
- ``restore``: the app takes its route back (the new revision if promoted, the old one after a rollback); the
  splitter moves back to its internal route with the new version still beside it, so requests already forwarded
  finish.
- ``done``: the app alone, as before the rollout.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

SPLITTER_IMPORT_PATH = "workers.on_cluster.splitter:build"
CANARY, SPLIT = "@canary", "@split"


def side_names(serve_name: str) -> tuple[str, str]:
    """The Serve names of the new version and of the splitter. '@' is in no control-plane app name, so these never
    meet another app's."""
    return f"{serve_name}{CANARY}", f"{serve_name}{SPLIT}"


def owner_of(ray_name: str) -> str:
    """The app a Serve application belongs to: itself, or the app whose rollout placed it."""
    for suffix in (CANARY, SPLIT):
        if ray_name.endswith(suffix):
            return ray_name.removesuffix(suffix)
    return ray_name


def serving_names(serve_name: str) -> tuple[str, str]:
    """The Serve applications that answer an app's requests: the app itself and, during a rollout, its new
    version. The splitter only forwards them (each request it forwards is counted again by the side that answers)."""
    return serve_name, f"{serve_name}{CANARY}"


def routes(serve_name: str) -> dict[str, str]:
    base = f"/__rollout/{serve_name}"
    return {"stable": f"{base}/stable", "canary": f"{base}/canary", "split": f"{base}/split"}


def rollout_apps(app_config: dict[str, Any], canary_config: dict[str, Any], rollout: Any, http_port: int) -> list[dict]:
    """The Serve applications of an app in ``rollout``: ``app_config`` (the app's own, at its revision) with its
    route as the phase has it, the new version and the splitter. ``canary_config`` is the new revision's config."""
    name = app_config["name"]
    public = app_config.get("route_prefix") or "/"
    internal = routes(name)
    phase = rollout.phase
    at_route = phase in ("split", "promote")  # the splitter holds the app's route
    weight = 100.0 if phase == "promote" else float(rollout.weight)
    canary_name, split_name = side_names(name)
    splitter: dict[str, Any] = {
        "name": split_name,
        "route_prefix": public if at_route else internal["split"],
        "import_path": SPLITTER_IMPORT_PATH,
        "args": {
            "stable": internal["stable"],
            "canary": internal["canary"],
            "proxy": f"http://127.0.0.1:{http_port}",  # the Serve proxy of the splitter's own node
        },
        "deployments": [
            {
                "name": "Splitter",
                "num_replicas": 1,
                "ray_actor_options": {"num_cpus": 0.05},
                "user_config": {"weight": weight},
            }
        ],
    }
    if settings.ROLLOUT_SPLITTER_RUNTIME_ENV:
        splitter["runtime_env"] = dict(settings.ROLLOUT_SPLITTER_RUNTIME_ENV)
    return [
        {**app_config, "route_prefix": internal["stable"] if at_route else public},
        {**canary_config, "name": canary_name, "route_prefix": internal["canary"]},
        splitter,
    ]
