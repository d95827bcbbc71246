"""Standard Serve config files in and out: what ``serve build`` writes and ``serve deploy`` takes.

A team applies a whole file to one cluster. Every application in it becomes (or updates) one of the team's
applications, admitted against the team's quota together and applied atomically: one refusal refuses the file
and changes nothing. A dry run applies the file inside a transaction, reports the per-app plan and rolls back,
so it checks exactly what a real apply would. Nothing here imports the user's code.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml
from django.core.exceptions import ValidationError
from django.db import transaction

from apps.clusters.models import Cluster
from apps.core.errors import error_detail
from apps.core.parsing import load_document
from apps.servespec import ray_schema
from apps.servespec.spec import SPEC_KEYS
from apps.teams.models import Team

from . import services
from .models import Application

MAX_FILE_BYTES = 1024 * 1024
# Top-level fields of a Serve config that belong to the whole cluster, not to one team's apps.
CLUSTER_WIDE = ("proxy_location", "http_options", "grpc_options", "controller_options", "tracing_config")


class _RollBack(Exception):
    def __init__(self, result: dict) -> None:
        super().__init__("dry run")
        self.result = result


def parse_document(raw: bytes | str, content_type: str) -> Any:
    """A Serve config file from a request body: JSON as JSON, YAML with the safe C loader, within a size (413) and a
    nesting limit checked before parsing (apps.core.parsing); anchors and aliases refused. Raises naming the
    problem."""
    document = load_document(raw, content_type, max_bytes=MAX_FILE_BYTES)
    try:
        json.dumps(document, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(
            {"file": ["Holds values a Serve config cannot carry (YAML dates, binary, NaN, infinity): quote them."]}
        ) from exc
    return document


def check_document(document: Any) -> tuple[dict, list[str]]:
    """Validate a whole file the way ``serve deploy`` does (Ray's ServeDeploySchema), but refuse the keys Ray
    would drop and translate the ones it renamed. Returns the translated document and the warnings."""
    if not isinstance(document, dict):
        raise ValidationError({"file": ["A Serve config file is a mapping with an 'applications' list."]})
    if "applications" not in document:
        hint = (
            " This looks like a single-application file (import_path at the top); Ray 2.60's serve deploy refuses it"
            " too: put it under 'applications:' with a name."
            if "import_path" in document
            else " This looks like a pre-2.0 deployment file; Ray 2.60 refuses it too."
            if "deployments" in document
            else ""
        )
        raise ValidationError({"applications": ["Required: the list of applications." + hint]})
    schemas = ray_schema.schemas()
    errors: dict[str, list[str]] = {}
    warnings: list[str] = []
    translated = ray_schema.check_keys(document, schemas.deploy, "", errors, warnings)
    if errors:
        raise ValidationError(errors)
    try:
        schemas.deploy.model_validate(copy.deepcopy(translated))  # Ray's validators change what they are given
    except Exception as exc:  # pydantic.ValidationError or ValueError from Ray's validators
        raise ValidationError(ray_schema.pydantic_errors(exc)) from exc
    errors = ray_schema.validate_dict_models(translated, schemas.deploy, "")
    if errors:
        raise ValidationError(errors)
    return translated, warnings


def _specs(document: dict, cluster: Cluster, warnings: list[str]) -> list[tuple[int, str, dict]]:
    for key in CLUSTER_WIDE:
        if key in document:
            warnings.append(
                f"{key}: ignored; the platform sets this for the whole cluster {cluster.name}"
                + (f" (HTTP port {cluster.http_port})." if key == "http_options" else ".")
            )
    if document.get("target_capacity") is not None:
        warnings.append("target_capacity: ignored; it applies to every app on the cluster.")
    shared_logging = document.get("logging_config")
    out = []
    for i, app in enumerate(document.get("applications") or []):
        spec = {k: copy.deepcopy(v) for k, v in app.items() if k in SPEC_KEYS}
        if shared_logging is not None and spec.get("logging_config") is None:
            # Ray's own rule for a file's top-level logging_config: apps without one take it.
            spec["logging_config"] = copy.deepcopy(shared_logging)
            warnings.append(f"applications[{i}].logging_config: set from the file's top-level logging_config.")
        out.append((i, app.get("name", "default"), spec))
    return out


def apply_file(
    *,
    actor: Any,
    team: Team,
    cluster: Cluster,
    document: Any,
    dry_run: bool = False,
    prune: bool = False,
    source: str = "api",
) -> dict:
    """Create or update one app per entry of the file (and with ``prune`` delete the team's others on the cluster).

    Returns ``{"dry_run", "plan": [{"app", "action", "diff", "warnings"}], "warnings", "changed"}``.
    """
    translated, warnings = check_document(document)
    entries = _specs(translated, cluster, warnings)
    try:
        with transaction.atomic():
            result = _apply(actor, team, cluster, entries, prune, source)
            result["warnings"] = warnings + result.pop("app_warnings")
            result["dry_run"] = dry_run
            if dry_run:
                raise _RollBack(result)
    except _RollBack as rolled:
        return rolled.result
    return result


def _apply(actor: Any, team: Team, cluster: Cluster, entries: list, prune: bool, source: str) -> dict:
    existing = {
        a.name: a
        for a in Application.objects.filter(team=team, cluster=cluster, deleted_at__isnull=True).select_related(
            "current_revision", "team", "cluster"
        )
    }
    errors: dict[str, list[str]] = {}
    plan: list[dict] = []
    app_warnings: list[str] = []
    for i, name, spec in entries:
        app_w: list[str] = []
        before = existing.get(name)
        try:
            with transaction.atomic():
                if before is None:
                    services.application_create(
                        actor=actor, team=team, cluster=cluster, name=name, spec=spec, source=source, warnings=app_w
                    )
                    action, diff = "create", [{"field": k, "desired": v, "observed": None} for k, v in spec.items()]
                else:
                    old = before.current_revision.spec if before.current_revision else {}
                    after = services.application_update(
                        actor=actor,
                        application=before,
                        spec=spec,
                        message="applied from a Serve config file",
                        source=source,
                        warnings=app_w,
                    )
                    changed = after.current_revision_id != before.current_revision_id
                    action = "update" if changed else "unchanged"
                    diff = _plan_diff(old, after.current_revision.spec) if changed else []
        except ValidationError as exc:
            _collect(errors, i, error_detail(exc))
            continue
        except services.Conflict as exc:
            _collect(errors, i, exc.detail)
            continue
        plan.append({"app": name, "action": action, "diff": diff, "warnings": app_w})
        app_warnings += [f"applications[{i}] ({name}): {w}" for w in app_w]
    if prune:
        names = {name for _, name, _ in entries}
        for name, app in sorted(existing.items()):
            if name not in names:
                services.application_delete(actor=actor, application=app, source=source)
                plan.append({"app": name, "action": "delete", "diff": [], "warnings": []})
    if errors:
        raise ValidationError(errors)
    changed = sum(1 for p in plan if p["action"] != "unchanged")
    return {"plan": plan, "changed": changed, "app_warnings": app_warnings, "cluster": cluster.pk, "team": team.slug}


def _plan_diff(old: dict, new: dict) -> list[dict]:
    """What changes, field by field, in Ray's terms (``observed`` is the running revision's value)."""
    return ray_schema.diff_app(new, old)


def _collect(errors: dict, index: int, detail: Any) -> None:
    if isinstance(detail, dict):
        for key, msgs in detail.items():
            if key == "quota_detail":
                continue
            errors.setdefault(f"applications[{index}].{key}", []).extend(
                [str(m) for m in msgs] if isinstance(msgs, list) else [str(msgs)]
            )
    else:
        errors.setdefault(f"applications[{index}]", []).extend(str(m) for m in detail)


def export_file(*, team: Team, cluster: Cluster) -> dict:
    """The team's apps on the cluster as a file ``serve deploy`` accepts on a bare Ray cluster."""
    apps = Application.objects.filter(team=team, cluster=cluster, deleted_at__isnull=True).select_related(
        "current_revision"
    )
    applications = [
        {"name": app.name, **{k: v for k, v in app.current_revision.spec.items() if k in SPEC_KEYS}}
        for app in apps.order_by("name")
        if app.current_revision
    ]
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": cluster.http_port},
        "applications": applications,
    }


def dump_yaml(document: dict) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
