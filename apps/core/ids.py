from __future__ import annotations

from typing import Any

MAX_ID = 2**63 - 1


def parse_id(value: Any) -> int | None:
    """A database id from a query string or JSON body, or None: never a value the database would overflow on."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_ID else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        return number if 0 < number <= MAX_ID else None
    return None


def json_object(request: Any) -> dict:
    """The request body as a JSON object; anything else (a list, a string, null) is a 400 that says so."""
    from rest_framework.exceptions import ValidationError

    if not isinstance(request.data, dict):
        raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
    return request.data


class StaffWritesOnly:
    """Any authenticated user reads; only staff (platform admins) write."""

    def has_permission(self, request: Any, view: Any) -> bool:
        return request.method in ("GET", "HEAD", "OPTIONS") or bool(request.user and request.user.is_staff)

    def has_object_permission(self, request: Any, view: Any, obj: Any) -> bool:
        return self.has_permission(request, view)
