"""Every write to applications: views, the API, admin actions and tasks all come through here."""

from __future__ import annotations

import copy
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import Http404
from django.utils import timezone

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.services import request_sync
from apps.core.errors import Conflict, PreconditionFailed
from apps.quotas.services import check_admission, refusals_recorded
from apps.servespec.ray_schema import same_app
from apps.servespec.spec import (
    NAME_RE,
    ROUTE_RE,
    check_runtime_env_policy,
    effective_route,
    normalize_spec,
    spec_hash,
)
from apps.teams.models import Team

from .models import Application, Revision, RouteGrant, serve_app_name


class DryRun(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def _lock_cluster(cluster: Cluster) -> Cluster:
    # Serialises writes per cluster so route-prefix checks and quota admission see each other.
    return Cluster.objects.select_for_update().get(pk=cluster.pk)


def _check_name(name: Any) -> str:
    # "--" is allowed inside a name (ray-llm's template names an app amazon--LightGPT): the cluster-side name is
    # "<team>--<name>" and team slugs never contain "--", so the team is everything before the first "--" and no
    # two (team, name) pairs give one cluster-side name.
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(
            {
                "name": [
                    "Required: letters, digits, '_', '.' and '-', starting and ending with a letter, digit or '_'; "
                    "at most 60."
                ]
            }
        )
    return name


def _check_unique(
    *,
    cluster: Cluster,
    team: Team,
    name: str,
    route_prefix: str | None,
    exclude_id: int | None,
    serve_name: str | None = None,
    adopting: str | None = None,
) -> None:
    """The name is free in the team, the route on the cluster, the Serve name on the cluster (apps the control
    plane manages and apps that ran before it, which it carries)."""
    live = Application.objects.filter(cluster=cluster, deleted_at__isnull=True).exclude(pk=exclude_id)
    errors: dict[str, list[str]] = {}
    if live.filter(team=team, name=name).exists():
        errors["name"] = [f"Team {team.slug} already has an application named {name!r} on {cluster.name}."]
    serve_name = serve_name or serve_app_name(team.slug, name)
    carried = {n: p for n, p in (cluster.preexisting_apps or {}).items() if n != adopting}
    observed = {u.get("name") for u in cluster.unmanaged_apps or [] if isinstance(u, dict)} - {adopting}
    if serve_name in carried or serve_name in observed or live.filter(adopted_serve_name=serve_name).exists():
        errors.setdefault("name", []).append(
            f"An app named {serve_name!r} already runs on {cluster.name} (not created here); "
            "a platform admin can adopt it into your team."
        )
    if route_prefix:
        clash = live.filter(route_prefix=route_prefix).select_related("team").first()
        if clash is not None:
            owner = "your team" if clash.team_id == team.pk else "another team"
            errors["route_prefix"] = [
                f"Route prefix {route_prefix!r} is already used by {owner}'s application on {cluster.name}."
            ]
        elif any(isinstance(p, dict) and p.get("route_prefix") == route_prefix for p in carried.values()):
            errors["route_prefix"] = [
                f"Route prefix {route_prefix!r} is used by an app that ran on {cluster.name} before it was registered."
            ]
    if errors:
        raise ValidationError(errors)


def _under(route: str, prefix: str) -> bool:
    """Whether ``route`` is ``prefix`` or below it (Serve matches the longest prefix: "/" holds every route)."""
    return prefix == "/" or route == prefix or route.startswith(prefix.rstrip("/") + "/")


def team_route_prefixes(team: Team) -> list[str]:
    """Where a team's routes may live: its own namespace, and the prefixes staff granted it."""
    return [f"/{team.slug}", *team.route_grants.values_list("prefix", flat=True)]


def check_external_scaler(cluster: Cluster, spec: dict) -> None:
    """``external_scaler_enabled`` only where the control plane mediates Ray's scale endpoint: on a cluster whose
    dashboard takes a token (Ray's ``RAY_AUTH_MODE=token``, the token held by the control plane), a team reaches
    the endpoint only through ``/ray/<team>/<cluster>/``, which admits each target against the quota first. On an
    open dashboard anyone who reaches it could set any replica count, around the quota."""
    if spec.get("external_scaler_enabled") is True and not cluster.auth_token:
        raise ValidationError(
            {
                "external_scaler_enabled": [
                    f"Not on {cluster.name}: its Ray dashboard takes no token, so Ray's scale endpoint would set any "
                    "replica count around the quota. On a cluster with Ray's token authentication the control plane "
                    "admits each target (POST /ray/<team>/<cluster>/api/v1/applications/<app>/deployments/<dep>/scale)."
                ]
            }
        )


def in_team_namespace(team: Team, route: str) -> bool:
    """Whether the route lies under one of the team's prefixes (its own ``/<slug>`` or a granted one)."""
    return any(_under(route, prefix) for prefix in team_route_prefixes(team))


def check_route_owner(*, cluster: Cluster, team: Team, route: str | None, exclude_id: int | None) -> None:
    """Routes belong to teams. A team's routes live under ``/<team-slug>`` (or a prefix staff granted it), and no
    route may sit under another team's route or hold one below it: Serve sends a request to the longest matching
    prefix, so ``/`` would catch every other team's unmatched paths and ``/vision/app/v2`` would take a sub-path
    of ``/vision/app``."""
    if not route:
        return
    allowed = team_route_prefixes(team)
    if not any(_under(route, prefix) for prefix in allowed):
        raise ValidationError(
            {
                "route_prefix": [
                    f"Team {team.slug}'s routes live under /{team.slug} (e.g. /{team.slug}/my-app)"
                    + (f" or {', '.join(allowed[1:])}" if len(allowed) > 1 else "")
                    + "; a platform admin can grant another prefix."
                ]
            }
        )
    others = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(pk=exclude_id)
        .exclude(team=team)
        .exclude(route_prefix="")
        .values_list("route_prefix", flat=True)
    )
    carried = [p.get("route_prefix") for p in (cluster.preexisting_apps or {}).values() if isinstance(p, dict)]
    for other in [*others, *[c for c in carried if isinstance(c, str) and c]]:
        if _under(route, other) or _under(other, route):
            raise ValidationError(
                {
                    "route_prefix": [
                        f"{route!r} would {'sit under' if _under(route, other) else 'hold below it'} the route of "
                        f"another team's application on {cluster.name}: Serve would send one of them the other's "
                        "requests. Choose a route that neither contains nor is contained by another team's."
                    ]
                }
            )


def _check_version(application: Application, expected_version: int | None) -> None:
    if expected_version is not None and expected_version != application.version:
        raise PreconditionFailed(
            {
                "version": [
                    f"The application changed since you read it (you have version {expected_version}, "
                    f"current is {application.version}). Reload and apply your change again."
                ],
                "current_version": application.version,
            }
        )


def _summary(app: Application, spec: dict | None) -> dict:
    return {"name": app.name, "route_prefix": app.route_prefix, "version": app.version, "spec": spec}


def new_revision(app: Application, spec: dict, actor: Any, message: str, *, current: bool = True) -> Revision:
    """The app's next revision; made its current one (the caller saves the app) unless ``current`` is False (a
    rollout's new version, made current when it is promoted)."""
    number = (app.revisions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    rev = Revision.objects.create(
        application=app,
        number=number,
        spec=spec,
        spec_hash=spec_hash(spec),
        author=actor if getattr(actor, "is_authenticated", False) else None,
        message=message[:200],
    )
    if current:
        app.current_revision = rev
    return rev


def locked_for_write(application: Application) -> tuple[Cluster, Application]:
    """The app's cluster and the app, locked for a write (in the caller's transaction); 409 when it is being
    deleted."""
    cluster = _lock_cluster(application.cluster)
    app = (
        Application.objects.select_for_update(of=("self",))
        .select_related("team", "current_revision")
        .get(pk=application.pk)
    )
    if app.deleted_at is not None:
        raise Conflict({"detail": "This application is being deleted."})
    return cluster, app


def application_create(
    *,
    actor: Any,
    team: Team,
    cluster: Cluster,
    name: str,
    spec: dict,
    dry_run: bool = False,
    source: str = "api",
    warnings: list[str] | None = None,
) -> Application:
    """Create an application and its first revision; the next push deploys it. ``warnings`` collects renamed
    keys that were translated."""
    name = _check_name(name)
    warnings = warnings if warnings is not None else []
    clean = normalize_spec(spec, warnings=warnings)
    route = effective_route(clean)
    try:
        with refusals_recorded(team=team, cluster=cluster, actor=actor, dry_run=dry_run), transaction.atomic():
            cluster = _lock_cluster(cluster)
            check_runtime_env_policy(cluster.runtime_env_policy, cluster.name, clean)
            check_external_scaler(cluster, clean)
            _check_unique(cluster=cluster, team=team, name=name, route_prefix=route, exclude_id=None)
            check_route_owner(cluster=cluster, team=team, route=route, exclude_id=None)
            usage = check_admission(team=team, cluster=cluster, spec=clean)
            if dry_run:
                raise DryRun(
                    {"valid": True, "name": name, "spec": clean, "quota": _usage_json(usage), "warnings": warnings}
                )
            app = Application.objects.create(team=team, cluster=cluster, name=name, route_prefix=route or "")
            new_revision(app, clean, actor, "created")
            app.save(update_fields=["current_revision"])
            audit_record(
                actor=actor, team=team, action="application.create", obj=app, after=_summary(app, clean), source=source
            )
            request_sync(cluster_id=cluster.pk)
    except IntegrityError as exc:  # a concurrent write won the same name or route
        raise Conflict({"name": ["An application with this name or route prefix was just created; reload."]}) from exc
    return app


def application_update(
    *,
    actor: Any,
    application: Application,
    spec: dict,
    expected_version: int | None = None,
    dry_run: bool = False,
    message: str = "updated",
    source: str = "api",
    warnings: list[str] | None = None,
) -> Application:
    warnings = warnings if warnings is not None else []
    clean = normalize_spec(spec, warnings=warnings)
    route = effective_route(clean)
    with (
        refusals_recorded(team=application.team, cluster=application.cluster, actor=actor, dry_run=dry_run),
        transaction.atomic(),
    ):
        cluster, app = locked_for_write(application)
        _check_version(app, expected_version)
        if app.rollouts.exclude(phase="done").exists():  # its rows through the relation: rollouts sit above
            raise Conflict(
                {"detail": "A rollout of this application is under way: promote or abort it before changing the app."}
            )
        check_runtime_env_policy(cluster.runtime_env_policy, cluster.name, clean)
        check_external_scaler(cluster, clean)
        _check_unique(
            cluster=cluster,
            team=app.team,
            name=app.name,
            route_prefix=route,
            exclude_id=app.pk,
            serve_name=app.serve_name,
        )
        if route != (app.route_prefix or None):  # an app keeps the route it has (adopted ones included)
            check_route_owner(cluster=cluster, team=app.team, route=route, exclude_id=app.pk)
        usage = check_admission(team=app.team, cluster=cluster, spec=clean, exclude_app_id=app.pk)
        if dry_run:
            raise DryRun(
                {"valid": True, "name": app.name, "spec": clean, "quota": _usage_json(usage), "warnings": warnings}
            )
        before = _summary(app, app.current_revision.spec if app.current_revision else None)
        if app.current_revision and (
            app.current_revision.spec_hash == spec_hash(clean) or same_app(app.current_revision.spec, clean)
        ):
            return app  # nothing changed in meaning: no new revision, no push
        new_revision(app, clean, actor, message)
        app.route_prefix = route or ""
        app.version = F("version") + 1
        app.state = Application.State.PENDING
        app.updated_at = timezone.now()
        app.save(update_fields=["current_revision", "route_prefix", "version", "state", "updated_at"])
        app.refresh_from_db()
        audit_record(
            actor=actor,
            team=app.team,
            action="application.update",
            obj=app,
            before=before,
            after=_summary(app, clean),
            source=source,
        )
        request_sync(cluster_id=cluster.pk)
    return app


def application_scale(
    *, actor: Any, application: Application, deployment: str, target: int, source: str = "api"
) -> Application:
    """An external scaler's replica target, made desired state: a revision with the deployment's ``num_replicas``
    set to ``target``, admitted against the team's quota and caps like any change (a refusal changes nothing), and
    audited. The app must have ``external_scaler_enabled``; the deployment must be one its config lists or Ray
    reports. Raises ValidationError, or Http404 for a deployment the app does not have."""
    spec = copy.deepcopy(application.current_revision.spec if application.current_revision else {})
    if spec.get("external_scaler_enabled") is not True:
        raise ValidationError(
            {
                "external_scaler_enabled": [
                    f"Cannot update replicas for deployment '{deployment}' in application '{application.name}': the "
                    "external scaling API can only be used when 'external_scaler_enabled' is set to true in the "
                    "application's config."
                ]
            }
        )
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ValidationError({"target_num_replicas": ["Must be a whole number, 0 or more."]})
    deployments = spec.setdefault("deployments", [])
    entry = next((d for d in deployments if isinstance(d, dict) and d.get("name") == deployment), None)
    if entry is None:
        if deployment not in ((application.status or {}).get("deployments") or {}):
            raise Http404("Application or Deployment not found")
        entry = {"name": deployment}
        deployments.append(entry)
    entry["num_replicas"] = target
    return application_update(
        actor=actor,
        application=application,
        spec=spec,
        message=f"{deployment} scaled to {target} replicas by the external scaler",
        source=source,
    )


def application_rollback(
    *,
    actor: Any,
    application: Application,
    revision_number: int,
    expected_version: int | None = None,
    dry_run: bool = False,
    source: str = "api",
) -> Application:
    if not isinstance(revision_number, int) or isinstance(revision_number, bool):
        raise ValidationError({"revision": ["Required: the number of an earlier revision."]})
    old = application.revisions.filter(number=revision_number).first()
    if old is None:
        raise ValidationError({"revision": [f"Revision {revision_number} does not exist for this application."]})
    return application_update(
        actor=actor,
        application=application,
        spec=old.spec,
        expected_version=expected_version,
        dry_run=dry_run,
        message=f"rollback to r{revision_number}",
        source=source,
    )


def application_delete(
    *, actor: Any, application: Application, expected_version: int | None = None, source: str = "api"
) -> Application:
    """Take the app out of the desired config; the row goes once a push has removed it from Ray."""
    with transaction.atomic():
        _lock_cluster(application.cluster)
        app = Application.objects.select_for_update(of=("self",)).select_related("team").get(pk=application.pk)
        _check_version(app, expected_version)
        if app.deleted_at is not None:
            return app
        app.deleted_at = timezone.now()
        app.state = Application.State.DELETING
        app.version = F("version") + 1
        app.save(update_fields=["deleted_at", "state", "version"])
        app.refresh_from_db()
        audit_record(
            actor=actor, team=app.team, action="application.delete", obj=app, before=_summary(app, None), source=source
        )
        request_sync(cluster_id=app.cluster_id)
    return app


def _usage_json(usage: list) -> list[dict]:
    from apps.quotas.services import usage_json

    return [usage_json(u) for u in usage]


def application_adopt(
    *,
    actor: Any,
    cluster: Cluster,
    serve_name: str,
    team: Team,
    name: str | None = None,
    source: str = "api",
    warnings: list[str] | None = None,
) -> Application:
    """Make an app that runs on the cluster without the control plane (it ran before registration, or appeared
    later) one of ``team``'s applications.

    Its first revision is the config Ray runs; it keeps its Serve name, so the next push changes nothing on the
    cluster and its route never stops answering. Admitted against the team's quota like any write.
    """
    from apps.clusters.selectors import unmanaged_app

    warnings = warnings if warnings is not None else []
    with refusals_recorded(team=team, cluster=cluster, actor=actor), transaction.atomic():
        cluster = _lock_cluster(cluster)
        entry = unmanaged_app(cluster, serve_name)
        if entry is None:
            raise Http404(f"No app named {serve_name!r} runs on {cluster.name} outside the control plane.")
        if not entry.get("config"):
            raise Conflict(
                {"detail": f"{serve_name!r} was deployed with serve.run: Ray keeps no config for it to adopt."}
            )
        name = _check_name(name if name else default_app_name(serve_name))
        config = {k: v for k, v in entry["config"].items() if k not in ("name", "host", "port")}
        clean = normalize_spec(config, warnings=warnings)
        route = effective_route(clean)
        _check_unique(
            cluster=cluster,
            team=team,
            name=name,
            route_prefix=route,
            exclude_id=None,
            serve_name=serve_name,
            adopting=serve_name,
        )
        check_admission(team=team, cluster=cluster, spec=clean)
        app = Application.objects.create(
            team=team,
            cluster=cluster,
            name=name,
            route_prefix=route or "",
            adopted_serve_name=serve_name,
            state=Application.State.RUNNING if entry.get("status") == "RUNNING" else Application.State.DEPLOYING,
        )
        rev = new_revision(app, clean, actor, f"adopted from {cluster.name} (ran there as {serve_name})")
        app.deployed_revision = rev
        app.save(update_fields=["current_revision", "deployed_revision"])
        preexisting = dict(cluster.preexisting_apps or {})
        preexisting.pop(serve_name, None)
        Cluster.objects.filter(pk=cluster.pk).update(preexisting_apps=preexisting)
        audit_record(
            actor=actor,
            team=team,
            action="application.adopt",
            obj=app,
            before={"serve_name": serve_name, "kind": entry.get("kind"), "cluster": cluster.name},
            after=_summary(app, clean),
            source=source,
        )
        request_sync(cluster_id=cluster.pk)
    return app


def default_app_name(serve_name: str) -> str:
    """The control-plane name an adopted app gets unless one is given: its Serve name where that is a valid name."""

    if NAME_RE.match(serve_name) and "--" not in serve_name:
        return serve_name
    cleaned = re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9_.\-]", "-", serve_name)).strip("-.")[:60].strip("-.")
    return cleaned or "adopted"


def route_grant_create(*, actor: Any, team: Team, prefix: str, source: str = "api") -> RouteGrant:
    """Staff let a team use a route prefix outside its namespace (one team per prefix)."""

    route = prefix if isinstance(prefix, str) else ""
    errors: dict[str, list[str]] = {}
    if not ROUTE_RE.match(route) or len(route) > 100 or (route != "/" and route.endswith("/")):
        errors["prefix"] = ["A route prefix: '/', or '/' and letters, digits, . _ ~ - / (not ending in '/')."]
    elif RouteGrant.objects.filter(prefix=route).exclude(team=team).exists():
        errors["prefix"] = [f"{route!r} is granted to another team; revoke that grant first."]
    if errors:
        raise ValidationError(errors)
    grant, _ = RouteGrant.objects.get_or_create(team=team, prefix=route, defaults={"granted_by": actor})
    audit_record(actor=actor, team=team, action="route_grant.create", obj=grant, after={"prefix": route}, source=source)
    return grant


def route_grant_delete(*, actor: Any, grant: RouteGrant, source: str = "api") -> None:
    """Revoke a grant: apps already on such routes keep them (a route is checked when it changes)."""
    audit_record(
        actor=actor,
        team=grant.team,
        action="route_grant.delete",
        obj=grant,
        before={"prefix": grant.prefix},
        source=source,
    )
    grant.delete()
