"""Celery tasks: thin wrappers that take ids, load rows and call services."""

from . import compaction, metrics, sync  # noqa: F401
