"""Reads for clusters, above all the merged Serve config that the next push sends."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.applications.models import Application
from apps.applications.spec import serve_app_config, spec_hash

from .models import Cluster


@dataclass
class MergedConfig:
    config: dict
    hash: str
    # app id -> revision id of what this config carries, to mark as deployed once Ray has it.
    revisions: dict[int, int] = field(default_factory=dict)
    app_configs: dict[str, dict] = field(default_factory=dict)
    # Apps that ran before the cluster was registered, carried unchanged until adopted or removed.
    carried: list[str] = field(default_factory=list)


def build_serve_config(cluster: Cluster) -> MergedConfig:
    """The whole-cluster config from every team's current revision, in one query whatever the app count."""
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True, current_revision__isnull=False)
        .select_related("team", "current_revision")
        .only("id", "name", "adopted_serve_name", "team__slug", "current_revision__id", "current_revision__spec")
        .order_by("team__slug", "name")
    )
    app_configs: dict[str, dict] = {}
    revisions: dict[int, int] = {}
    apps = list(apps)
    catalog = _catalog(app.pk for app in apps)
    for app in apps:
        cfg = serve_app_config(app.serve_name, _with_catalog(app.current_revision.spec, catalog.get(app.pk, {})))
        app_configs[app.serve_name] = cfg
        revisions[app.pk] = app.current_revision.pk
    carried = []
    for name, pre in sorted((cluster.preexisting_apps or {}).items()):
        if isinstance(pre, dict) and isinstance(pre.get("config"), dict) and name not in app_configs:
            app_configs[name] = {**pre["config"], "name": name}
            carried.append(name)
    config = {
        "http_options": {"host": "0.0.0.0", "port": cluster.http_port},
        "applications": list(app_configs.values()),
    }
    return MergedConfig(
        config=config, hash=spec_hash(config), revisions=revisions, app_configs=app_configs, carried=carried
    )


def _catalog(app_ids) -> dict[int, dict[str, dict[str, str]]]:  # type: ignore[no-untyped-def]
    """app id -> deployment -> {model_id: uri}, in one query."""
    from apps.catalog.models import ModelEntry

    out: dict[int, dict[str, dict[str, str]]] = {}
    rows = ModelEntry.objects.filter(application_id__in=list(app_ids)).values_list(
        "application_id", "deployment", "model_id", "uri"
    )
    for app_id, deployment, model_id, uri in rows.order_by("application_id", "deployment", "model_id"):
        out.setdefault(app_id, {}).setdefault(deployment, {})[model_id] = uri
    return out


def _with_catalog(spec: dict, models: dict[str, dict[str, str]]) -> dict:
    """The catalog reaches the app without a code change: user_config["models"] maps model ids to URIs.

    Serve applies a user_config change by calling reconfigure() on running replicas, without restarting them.
    """
    if not models:
        return spec
    spec = dict(spec)
    deployments = []
    for dep in spec.get("deployments", []):
        entries = models.get(dep.get("name", ""))
        if entries:
            dep = dict(dep)
            user_config = dict(dep.get("user_config") or {})
            user_config["models"] = {**(user_config.get("models") or {}), **entries}
            dep["user_config"] = user_config
        deployments.append(dep)
    spec["deployments"] = deployments
    return spec


def cluster_state(cluster: Cluster) -> dict:
    """Nodes (capacity and what replicas use) and the replicas on each, from the last observation."""
    from decimal import Decimal

    from apps.applications.spec import to_decimal

    pools = list(cluster.pools.all())
    nodes: dict[str, dict] = {}
    for node in cluster.nodes or []:
        labels = node.get("labels") or {}
        nodes[node["node_id"]] = {
            "id": node["node_id"],
            "ip": node.get("node_ip", ""),
            "is_head": bool(node.get("is_head_node")),
            "state": node.get("state", ""),
            "pool": labels.get("pool", ""),
            "labels": labels,
            "capacity": {
                k: str(to_decimal(v))
                for k, v in (node.get("resources_total") or {}).items()
                if not k.startswith("node:")
            },
            "used": {},
            "replicas": [],
        }
    # Only apps Ray reported on: a cluster with thousands of registered apps renders as fast as its placement.
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(status={})
        .select_related("team")
        .only("id", "name", "status", "team__slug")
    )
    for app in apps:
        for dep_name, dep in (app.status.get("deployments") or {}).items():
            resources = dep.get("required_resources") or {}
            for rep in dep.get("replicas") or []:
                node = nodes.setdefault(
                    rep.get("node_id", ""),
                    {
                        "id": rep.get("node_id", ""),
                        "ip": rep.get("node_ip", ""),
                        "is_head": False,
                        "state": "",
                        "pool": "",
                        "labels": {},
                        "capacity": {},
                        "used": {},
                        "replicas": [],
                    },
                )
                node["replicas"].append(
                    {
                        "replica": rep.get("replica_id", ""),
                        "app": app.serve_name,
                        "application_id": app.pk,
                        "deployment": dep_name,
                        "team": app.team.slug,
                        "state": rep.get("state", ""),
                        "resources": {k: str(to_decimal(v)) for k, v in resources.items()},
                    }
                )
                for k, v in resources.items():
                    node["used"][k] = str(to_decimal(node["used"].get(k, "0")) + to_decimal(v))
    return {
        "cluster": cluster.pk,
        "observed_at": cluster.last_seen_at.isoformat() if cluster.last_seen_at else None,
        "pools": [{"name": p.name, "resource": p.resource, "capacity": str(p.capacity)} for p in pools],
        "nodes": sorted(nodes.values(), key=lambda n: (not n["is_head"], n["ip"], n["id"])),
        "total_gpus": str(sum((to_decimal(n["capacity"].get("GPU", 0)) for n in nodes.values()), Decimal(0))),
    }


def unmanaged_apps(cluster: Cluster) -> list[dict]:
    """Apps on the cluster the control plane did not create, as last observed.

    ``preexisting``: ran before registration; carried unchanged in every push until adopted or removed.
    ``unexpected``: appeared later, behind the control plane's back; the drift policy applies (repair removes it).
    ``imperative``: deployed with ``serve.run``; Ray's declarative PUT leaves it alone, nothing here can change it.
    """
    observed = {u["name"]: u for u in cluster.unmanaged_apps or [] if isinstance(u, dict) and u.get("name")}
    out = []
    for name, pre in sorted((cluster.preexisting_apps or {}).items()):
        if not isinstance(pre, dict):
            continue
        seen = observed.pop(name, None)
        config = pre.get("config")
        out.append(
            {
                "name": name,
                "kind": "preexisting" if config else "imperative",
                "carried": bool(config),
                "status": (seen or {}).get("status") or ("MISSING" if cluster.last_seen_at else "UNKNOWN"),
                "route_prefix": pre.get("route_prefix"),
                "config": config,
                "since": pre.get("seen_at"),
                "can_adopt": bool(config),
                "can_remove": bool(config),
            }
        )
    for name, seen in sorted(observed.items()):
        out.append(
            {
                "name": name,
                "kind": seen.get("kind", "unexpected"),
                "carried": False,
                "status": seen.get("status", ""),
                "route_prefix": seen.get("route_prefix"),
                "config": seen.get("config"),
                "since": None,
                "can_adopt": bool(seen.get("config")),
                "can_remove": seen.get("kind") != "imperative",
            }
        )
    return out


def unmanaged_app(cluster: Cluster, name: str) -> dict | None:
    return next((u for u in unmanaged_apps(cluster) if u["name"] == name), None)
