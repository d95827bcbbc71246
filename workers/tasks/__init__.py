"""Celery tasks: thin wrappers that take ids, load rows and call services."""

from . import alerts, compaction, metrics, quotas, rollouts, sync  # noqa: F401
