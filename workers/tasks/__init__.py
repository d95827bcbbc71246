"""Celery tasks: thin wrappers that take ids, load rows and call services."""

from . import alerts, compaction, housekeeping, metrics, quotas, rollouts, sync  # noqa: F401
