"""Serializer fields that take JSON as it is: a string must be a string, a number a number (no coercion), so the
OpenAPI schema says exactly what the server accepts. And one helper that turns DRF's nested errors into the flat
``field[0].subfield`` keys every error of this API uses."""

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


def flat_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """{"deployments": [{"name": ["..."]}]} -> {"deployments[0].name": ["..."]}."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):  # a list's errors by index
                name = f"{prefix}[{key}]"
            else:
                name = key if not prefix else (f"{prefix}.{key}" if key != "non_field_errors" else prefix)
            for k, v in flat_errors(value, name).items():
                out.setdefault(k, []).extend(v)
    elif isinstance(detail, list) and any(isinstance(x, (dict, list)) for x in detail):
        for i, value in enumerate(detail):
            if value:
                for k, v in flat_errors(value, f"{prefix}[{i}]").items():
                    out.setdefault(k, []).extend(v)
    else:
        items = detail if isinstance(detail, list) else [detail]
        out[prefix or "non_field_errors"] = [str(x) for x in items]
    return out


def error_fields(exc: Exception) -> dict[str, list[str]]:
    """A validation error (DRF's or Django's) as {field: [messages]} for a form on a page; internal keys dropped."""
    detail = getattr(exc, "detail", None)
    if detail is None:
        detail = getattr(exc, "message_dict", None) or {"non_field_errors": getattr(exc, "messages", [str(exc)])}
    if not isinstance(detail, dict):
        detail = {"non_field_errors": detail}
    return {k: v for k, v in flat_errors(detail).items() if k != "quota_detail" and not k.startswith("quota_detail")}


def error_text(exc: Exception) -> str:
    """The same as one line for a message: "field: message; ..." (general messages without a field name)."""
    general = ("detail", "non_field_errors", "quota")
    return "; ".join(m if k in general else f"{k}: {m}" for k, messages in error_fields(exc).items() for m in messages)
