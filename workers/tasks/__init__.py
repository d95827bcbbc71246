"""Celery tasks: thin wrappers that take ids, load rows and call services."""

from . import sync  # noqa: F401
