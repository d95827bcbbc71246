"""The merged Serve config: every team's current revision on one cluster, the catalog's models, and the apps that ran
before the cluster was registered."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Exists, OuterRef

from apps.applications.models import Application
from apps.catalog.models import ModelEntry
from apps.clusters.models import Cluster
from apps.rollouts.models import Rollout
from apps.rollouts.placement import rollout_apps
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
    # Apps whose current revision is held back (at fault): Serve name -> why; their good revision runs, or nothing.
    held_back: dict[str, str] = field(default_factory=dict)
    # Apps this config changes since what Ray last accepted: Serve name -> that config (None: new here).
    accepted: dict[str, dict | None] = field(default_factory=dict)

    def without(self, held: set[str]) -> dict:
        """This config with ``held`` apps at what Ray last accepted of them (or absent): a trial that isolates a
        refused app."""
        apps = []
        for name, cfg in self.app_configs.items():
            if name in held and name in self.accepted:
                cfg = self.accepted[name]
                if cfg is None:
                    continue
            apps.append(cfg)
        return {**self.config, "applications": apps}


def build_serve_config(cluster: Cluster) -> MergedConfig:
    """The whole-cluster config from every team's current revision, in one query whatever the app count."""
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True, current_revision__isnull=False)
        .select_related("team", "current_revision", "good_revision", "deployed_revision")
        .only(
            "id",
            "name",
            "adopted_serve_name",
            "team__slug",
            "fault",
            "fault_revision_id",
            "current_revision__id",
            "current_revision__spec",
            "good_revision__id",
            "good_revision__spec",
            "deployed_revision__id",
            "deployed_revision__spec",
        )
        .annotate(rolling=Exists(Rollout.objects.filter(application=OuterRef("pk")).exclude(phase=Rollout.Phase.DONE)))
        .order_by("team__slug", "name")
    )
    app_configs: dict[str, dict] = {}
    revisions: dict[int, int] = {}
    held_back: dict[str, str] = {}
    accepted: dict[str, dict | None] = {}
    apps = list(apps)
    catalog = _catalog(app.pk for app in apps)
    rolling = [app.pk for app in apps if app.rolling]
    # Only a cluster with a rollout under way pays for the query that reads it.
    rollouts = (
        {
            r.application_id: r
            for r in Rollout.objects.filter(application_id__in=rolling)
            .exclude(phase=Rollout.Phase.DONE)
            .select_related("to_revision")
        }
        if rolling
        else {}
    )
    for app in apps:
        revision = app.current_revision
        if app.fault_revision_id is not None and app.fault_revision_id == app.current_revision_id:
            # One team's mistake stays that team's: its last good revision runs (or nothing), the others deploy.
            held_back[app.serve_name] = app.fault
            # what was seen running within its admission, else what Ray last accepted of it, if not the fault
            good = next(
                (
                    r
                    for r in (app.good_revision, app.deployed_revision)
                    if r is not None and r.pk != app.fault_revision_id
                ),
                None,
            )
            if good is None:
                continue
            revision = good
        models = catalog.get(app.pk, {})
        cfg = serve_app_config(app.serve_name, _with_catalog(revision.spec, models))
        app_configs[app.serve_name] = cfg
        rollout = rollouts.get(app.pk)
        if rollout is not None and app.serve_name not in held_back:
            # The app, its new version and the splitter, as the rollout's phase places them (apps.rollouts).
            canary = serve_app_config(app.serve_name, _with_catalog(rollout.to_revision.spec, models))
            for side in rollout_apps(cfg, canary, rollout, cluster.http_port):
                app_configs[side["name"]] = side
        revisions[app.pk] = revision.pk
        if app.deployed_revision_id != revision.pk:
            last = app.deployed_revision
            accepted[app.serve_name] = (
                serve_app_config(app.serve_name, _with_catalog(last.spec, models)) if last else None
            )
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
        config=config,
        hash=spec_hash(config),
        revisions=revisions,
        app_configs=app_configs,
        carried=carried,
        held_back=held_back,
        accepted=accepted,
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
