"""Serializer fields that take JSON as it is: a string must be a string, a number a number (no coercion), so the
OpenAPI schema says exactly what the server accepts. (The flat ``field[0].subfield`` error keys every error of this
API uses are made by ``apps.core.errors.flat_errors``.)"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers


class StrictCharField(serializers.CharField):
    """A JSON string, kept as given (no trimming, no number turned into text)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer (not a string of digits, not a boolean)."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """A JSON true or false (not "yes", 1 or "true")."""

    default_error_messages = {"invalid": "Must be true or false."}

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


def parse(serializer_class: type[serializers.Serializer], data: Any, **kwargs: Any) -> dict[str, Any]:
    """A write's body through its input serializer, the one parser of a body: a body that is not a JSON object, or
    a value of the wrong JSON type or out of its bounds, is a 400 naming the field (flat ``a[0].b`` keys) and
    changes nothing; what it returns is typed, for the service's keyword arguments."""
    from .errors import flat_errors

    serializer = serializer_class(data=data, **kwargs)
    if not serializer.is_valid():
        raise serializers.ValidationError(flat_errors(serializer.errors))
    return dict(serializer.validated_data)


def says(message: str) -> dict[str, str]:
    """``error_messages`` for a field whose absence or wrong JSON type is best told with one sentence."""
    return {"required": message, "invalid": message, "null": message, "blank": message}
