from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.services import request_sync

from .models import ModelEntry

MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,199}$")
DEFAULT_SCHEMES = ("file", "s3", "gs")


def _check(application: Application, deployment: Any, model_id: Any, uri: Any, size: Any) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    names = (
        [d.get("name") for d in (application.current_revision.spec.get("deployments") or [])]
        if application.current_revision
        else []
    )
    if deployment not in names:
        errors["deployment"] = [
            f"Application {application.name} has no deployment {deployment!r} (it has: {', '.join(names) or 'none'})."
        ]
    if not isinstance(model_id, str) or not MODEL_ID_RE.match(model_id) or ".." in model_id:
        errors["model_id"] = ["Required: letters, digits and . _ : @ / -, at most 200 characters, no '..'."]
    schemes = application.cluster.runtime_env_policy.get("allowed_model_schemes", list(DEFAULT_SCHEMES))
    parsed = urlparse(uri) if isinstance(uri, str) else None
    if parsed is None or not parsed.scheme or len(uri) > 1000:
        errors["uri"] = ["Required: a URI such as s3://bucket/model.npy or file:///models/m.npy."]
    elif parsed.scheme not in schemes:
        errors["uri"] = [
            f"Scheme {parsed.scheme}:// is not allowed on {application.cluster.name}; allowed: {', '.join(schemes)}."
        ]
    elif ".." in parsed.path.split("/"):
        errors["uri"] = ["Must not contain '..' segments."]
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        errors["size_bytes"] = ["Must be a whole number of bytes, zero or more."]
    return errors


def model_create(
    *,
    actor: Any,
    application: Application,
    deployment: str,
    model_id: str,
    uri: str,
    size_bytes: int | None = None,
    description: str = "",
    source: str = "api",
) -> ModelEntry:
    errors = _check(application, deployment, model_id, uri, size_bytes)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            entry = ModelEntry.objects.create(
                application=application,
                deployment=deployment,
                model_id=model_id,
                uri=uri,
                size_bytes=size_bytes,
                description=str(description or "")[:500],
            )
            audit_record(
                actor=actor,
                team=application.team,
                action="model.create",
                obj=entry,
                source=source,
                after={"application": application.name, "deployment": deployment, "model_id": model_id, "uri": uri},
            )
            request_sync(cluster_id=application.cluster_id)
    except IntegrityError as exc:
        raise ValidationError(
            {"model_id": [f"Model {model_id!r} is already in the catalog of {application.name}/{deployment}."]}
        ) from exc
    return entry


def model_update(
    *, actor: Any, entry: ModelEntry, uri: str, size_bytes: int | None, description: str, source: str = "api"
) -> ModelEntry:
    size = size_bytes
    errors = _check(entry.application, entry.deployment, entry.model_id, uri, size)
    if errors:
        raise ValidationError(errors)
    before = {"uri": entry.uri, "size_bytes": entry.size_bytes, "description": entry.description}
    with transaction.atomic():
        entry.uri, entry.size_bytes = uri, size
        entry.description = (description or "")[:500]
        entry.save()
        audit_record(
            actor=actor,
            team=entry.application.team,
            action="model.update",
            obj=entry,
            source=source,
            before=before,
            after={"uri": entry.uri, "size_bytes": entry.size_bytes, "description": entry.description},
        )
        request_sync(cluster_id=entry.application.cluster_id)
    return entry


def model_delete(*, actor: Any, entry: ModelEntry, source: str = "api") -> None:
    with transaction.atomic():
        audit_record(
            actor=actor,
            team=entry.application.team,
            action="model.delete",
            obj=entry,
            source=source,
            before={"model_id": entry.model_id, "uri": entry.uri},
        )
        cluster_id = entry.application.cluster_id
        entry.delete()
        request_sync(cluster_id=cluster_id)
