"""Every write to applications: views, the API, admin actions and tasks all come through here."""

from __future__ import annotations

import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import NotFound, ValidationError

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.services import request_sync
from apps.core.exceptions import Conflict, PreconditionFailed
from apps.quotas.services import check_admission, refusals_recorded
from apps.servespec.ray_schema import same_app
from apps.servespec.spec import NAME_RE, check_runtime_env_policy, effective_route, normalize_spec, spec_hash
from apps.teams.models import Team

from .models import Application, Revision, serve_app_name


class DryRun(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def _lock_cluster(cluster: Cluster) -> Cluster:
    # Serialises writes per cluster so route-prefix checks and quota admission see each other.
    return Cluster.objects.select_for_update().get(pk=cluster.pk)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or "--" in name:
        raise ValidationError(
            {
                "name": [
                    "Required: letters, digits, '_', '.' and single '-', starting with a letter, digit or '_'; "
                    "at most 60 ('--' separates the team in the app's name on the cluster)."
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


def _new_revision(app: Application, spec: dict, actor: Any, message: str) -> Revision:
    number = (app.revisions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    rev = Revision.objects.create(
        application=app,
        number=number,
        spec=spec,
        spec_hash=spec_hash(spec),
        author=actor if getattr(actor, "is_authenticated", False) else None,
        message=message[:200],
    )
    app.current_revision = rev
    return rev


def application_create(
    *,
    actor: Any,
    team: Team,
    cluster: Cluster,
    name: Any,
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
            _check_unique(cluster=cluster, team=team, name=name, route_prefix=route, exclude_id=None)
            usage = check_admission(team=team, cluster=cluster, spec=clean)
            if dry_run:
                raise DryRun(
                    {"valid": True, "name": name, "spec": clean, "quota": _usage_json(usage), "warnings": warnings}
                )
            app = Application.objects.create(team=team, cluster=cluster, name=name, route_prefix=route or "")
            _new_revision(app, clean, actor, "created")
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
        cluster = _lock_cluster(application.cluster)
        app = (
            Application.objects.select_for_update(of=("self",))
            .select_related("team", "current_revision")
            .get(pk=application.pk)
        )
        if app.deleted_at is not None:
            raise Conflict({"detail": "This application is being deleted."})
        _check_version(app, expected_version)
        check_runtime_env_policy(cluster.runtime_env_policy, cluster.name, clean)
        _check_unique(
            cluster=cluster,
            team=app.team,
            name=app.name,
            route_prefix=route,
            exclude_id=app.pk,
            serve_name=app.serve_name,
        )
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
        _new_revision(app, clean, actor, message)
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


def application_rollback(
    *,
    actor: Any,
    application: Application,
    revision_number: Any,
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
    name: Any = None,
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
            raise NotFound(f"No app named {serve_name!r} runs on {cluster.name} outside the control plane.")
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
        rev = _new_revision(app, clean, actor, f"adopted from {cluster.name} (ran there as {serve_name})")
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
