"""A cluster's parts that other apps own.

A cluster is registered here (name, kind, addresses, pools, admission caps, what Ray was last seen running), but
the policies and state of the apps that work on it live in their own one-to-one rows, in their own apps: the push
state and leases in deploys, the metrics source and the scrape lease in metrics, the compaction policy in
compaction, the starter grant in quotas. Each owner registers its part from its ``AppConfig.ready()``; the
clusters app creates, validates, serialises and shows them through this registry without importing its owners
(they sit above it in the layers). The API keeps one flat cluster object: a part's fields are the cluster's
fields, read through ``<accessor>.<field>``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import models


@dataclass(frozen=True)
class Part:
    """One owner's one-to-one row: ``model`` has ``cluster = OneToOneField(Cluster, related_name=accessor)``."""

    accessor: str
    model: type[models.Model]
    # fields an API client or the admin may set (the rest of the row is the owner's state, read-only)
    writable: tuple[str, ...]
    # secrets: never read back, kept when left empty in the admin
    write_only: tuple[str, ...] = ()
    # called after a write changed some of ``writable`` (row, changed field names), before the row is validated
    on_change: Callable[[Any, set[str]], None] | None = None
    # a check across rows once the cluster and its pools are saved (row); raises Django's ValidationError
    check: Callable[[Any], None] | None = None
    fields: tuple[str, ...] = field(default=())


_PARTS: dict[str, Part] = {}


def register(part: Part) -> None:
    names = tuple(f.name for f in part.model._meta.concrete_fields if f.name != "cluster")
    part = Part(**{**part.__dict__, "fields": names})
    taken = {name for other in _PARTS.values() if other.accessor != part.accessor for name in other.fields}
    if clash := taken & set(names):
        raise ValueError(f"cluster part {part.accessor}: fields {sorted(clash)} are another part's")
    _PARTS[part.accessor] = part


def parts() -> list[Part]:
    return list(_PARTS.values())


def accessors() -> list[str]:
    return list(_PARTS)


def owner_of(name: str) -> Part | None:
    """The part that holds the cluster field ``name`` (None: the cluster's own)."""
    return next((p for p in _PARTS.values() if name in p.fields), None)


def split(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Flat cluster fields -> (the cluster's own, {accessor: the part's})."""
    own: dict[str, Any] = {}
    theirs: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        part = owner_of(key)
        if part is None:
            own[key] = value
        else:
            theirs.setdefault(part.accessor, {})[key] = value
    return own, theirs


def flatten(data: dict[str, Any]) -> dict[str, Any]:
    """A serializer's validated data, where a part's fields come nested under its accessor, made flat."""
    flat = {k: v for k, v in data.items() if k not in _PARTS}
    for accessor in _PARTS:
        flat.update(data.get(accessor) or {})
    return flat


def value(cluster: models.Model, name: str) -> Any:
    """A cluster field by its flat name, wherever it lives."""
    part = owner_of(name)
    return getattr(getattr(cluster, part.accessor) if part else cluster, name)


def ensure(cluster: models.Model) -> None:
    """Every part's row exists (a new cluster gets each owner's defaults)."""
    for part in _PARTS.values():
        part.model.objects.get_or_create(cluster=cluster)


def write(cluster: models.Model, values: dict[str, dict[str, Any]]) -> None:
    """Set, validate and save the parts' fields (after the cluster's own row is saved)."""
    from django.core.exceptions import ValidationError

    for accessor, fields in values.items():
        part = _PARTS[accessor]
        if bad := set(fields) - set(part.writable):
            raise ValidationError({name: "Read-only." for name in sorted(bad)})
        row = getattr(cluster, accessor)
        for name, v in fields.items():
            setattr(row, name, v)
        if part.on_change:
            part.on_change(row, set(fields))
        row.full_clean(exclude=["cluster"])
        row.save()


def check(cluster: models.Model) -> None:
    for part in _PARTS.values():
        if part.check:
            part.check(getattr(cluster, part.accessor))


def related() -> list[str]:
    """For ``select_related``: every part (a page of clusters reads them all in one query)."""
    return list(_PARTS)


def on_cluster_saved(sender: type, instance: models.Model, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """``post_save`` of a cluster: a new one gets every part's row (a fixture being loaded, ``raw``, brings its own)."""
    if created and not raw:
        ensure(instance)
