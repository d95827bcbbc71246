"""The merged Serve config: every team's current revision on one cluster, the catalog's models, and the apps that ran
before the cluster was registered."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.applications.models import Application
from apps.catalog.models import ModelEntry
from apps.clusters.models import Cluster
from apps.servespec.spec import serve_app_config, spec_hash


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


def _catalog(app_ids) -> dict[int, dict[str, dict[str, str]]]:
    """app id -> deployment -> {model_id: uri}, in one query."""
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
