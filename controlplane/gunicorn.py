"""gunicorn's settings (``gunicorn --config python:controlplane.gunicorn controlplane.wsgi``).

Its own log lines and the access log come out like every other process's: JSON lines with ts, level, logger,
message and request_id (the X-Request-ID the response carries) when LOG_FORMAT is json (the production default).
"""

from __future__ import annotations

import logging
import os

from apps.core.middleware import JsonFormatter

_json = (
    os.environ.get("LOG_FORMAT", "json" if os.environ.get("DEBUG", "true").lower() in ("0", "false", "no") else "plain")
    == "json"
)


class AccessJsonFormatter(JsonFormatter):
    """An access line: the request, status and size, with the request id from the response's X-Request-ID."""

    def format(self, record: logging.LogRecord) -> str:
        atoms = record.args if isinstance(record.args, dict) else {}
        record.request_id = atoms.get("{x-request-id}o") or "-"
        return super().format(record)


accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
logconfig_dict = (
    {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "apps.core.middleware.JsonFormatter"},
            "access": {"()": "controlplane.gunicorn.AccessJsonFormatter"},
        },
        "filters": {"secrets": {"()": "apps.core.secrets.SecretRedactingFilter"}},
        "handlers": {
            "error": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["secrets"]},
            "access": {"class": "logging.StreamHandler", "formatter": "access", "filters": ["secrets"]},
        },
        "root": {"level": "INFO", "handlers": ["error"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
    if _json
    else {}
)


def post_worker_init(worker: object) -> None:
    """Each web worker, once it loaded the application, leaves it out of every later collection
    (controlplane/heap.py)."""
    from django.urls import get_resolver

    from controlplane import heap

    get_resolver().url_patterns  # noqa: B018  (every view module is imported now, not at the first request)
    heap.settle()
