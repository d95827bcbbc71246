"""Every write to applications: views, the API, admin actions and tasks all come through here."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.clusters.services import request_sync
from apps.core.exceptions import Conflict, PreconditionFailed
from apps.quotas.services import check_admission
from apps.teams.models import Team

from .models import Application, Revision
from .spec import NAME_RE, check_runtime_env_policy, normalize_spec, spec_hash


class DryRun(Exception):
    """Raised inside the transaction of a dry run so that nothing it did is kept."""

    def __init__(self, result: dict) -> None:
        super().__init__(result)
        self.result = result


def _lock_cluster(cluster: Cluster) -> Cluster:
    # Serialises writes per cluster so route-prefix checks and quota admission see each other.
    return Cluster.objects.select_for_update().get(pk=cluster.pk)


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name) or len(name) > 40:
        raise ValidationError(
            {"name": ["Required: lowercase letters, digits and single hyphens, at most 40 characters."]}
        )
    return name


def _check_unique(*, cluster: Cluster, team: Team, name: str, route_prefix: str, exclude_id: int | None) -> None:
    live = Application.objects.filter(cluster=cluster, deleted_at__isnull=True).exclude(pk=exclude_id)
    errors: dict[str, list[str]] = {}
    if live.filter(team=team, name=name).exists():
        errors["name"] = [f"Team {team.slug} already has an application named {name!r} on {cluster.name}."]
    clash = live.filter(route_prefix=route_prefix).select_related("team").first()
    if clash is not None:
        owner = "your team" if clash.team_id == team.pk else "another team"
        errors["route_prefix"] = [
            f"Route prefix {route_prefix!r} is already used by {owner}'s application on {cluster.name}."
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
    *, actor: Any, team: Team, cluster: Cluster, name: Any, spec: dict, dry_run: bool = False, source: str = "api"
) -> Application:
    name = _check_name(name)
    clean = normalize_spec(spec)
    try:
        with transaction.atomic():
            cluster = _lock_cluster(cluster)
            check_runtime_env_policy(cluster.runtime_env_policy, cluster.name, clean)
            _check_unique(cluster=cluster, team=team, name=name, route_prefix=clean["route_prefix"], exclude_id=None)
            usage = check_admission(team=team, cluster=cluster, spec=clean)
            if dry_run:
                raise DryRun({"valid": True, "name": name, "spec": clean, "quota": _usage_json(usage)})
            app = Application.objects.create(team=team, cluster=cluster, name=name, route_prefix=clean["route_prefix"])
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
) -> Application:
    clean = normalize_spec(spec)
    with transaction.atomic():
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
            cluster=cluster, team=app.team, name=app.name, route_prefix=clean["route_prefix"], exclude_id=app.pk
        )
        usage = check_admission(team=app.team, cluster=cluster, spec=clean, exclude_app_id=app.pk)
        if dry_run:
            raise DryRun({"valid": True, "name": app.name, "spec": clean, "quota": _usage_json(usage)})
        before = _summary(app, app.current_revision.spec if app.current_revision else None)
        if app.current_revision and app.current_revision.spec_hash == spec_hash(clean):
            return app  # nothing changed: no new revision, no push
        _new_revision(app, clean, actor, message)
        app.route_prefix = clean["route_prefix"]
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
