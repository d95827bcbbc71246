"""Validators of values that name things outside the control plane (a service's URL, Prometheus label matchers)."""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError

LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def validate_service_url(value: str) -> None:
    """http(s)://host[:port][/path]; a service name without dots (as in Compose or Kubernetes) is a host too."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"Not a URL: {exc}.") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise ValidationError("Enter an http:// or https:// URL, e.g. http://prometheus:9090.")
    if parts.username or parts.password:
        raise ValidationError("Put no credentials in the URL: use prometheus_credential (kept encrypted).")
    if parts.query or parts.fragment:
        raise ValidationError("The base URL of the query API, with no query string, e.g. http://prometheus:9090.")
    del port


def validate_matchers(value: object) -> None:
    """Label matchers that select one cluster's series in Prometheus: {"label": "value"}, equality only."""
    if not isinstance(value, dict):
        raise ValidationError('Must be a JSON object of label names to values, e.g. {"ray_cluster": "prod-a"}.')
    if len(value) > 20:
        raise ValidationError("At most 20 label matchers.")
    for key, v in value.items():
        if not isinstance(key, str) or not LABEL_NAME_RE.match(key) or key.startswith("__"):
            raise ValidationError(f"{key!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*, not __*).")
        if not isinstance(v, str) or not v or len(v) > 200:
            raise ValidationError(f"The value of {key!r} must be a non-empty string of at most 200 characters.")
