"""What services raise besides Django's own exceptions (ValidationError, PermissionDenied, Http404): a refusal with
a structured answer, a conflict with current state, a stale version, a value over its size limit. No DRF here:
``apps.core.exceptions.exception_handler`` maps each to its HTTP answer, and the pages show them."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError


class Invalid(DjangoValidationError):
    """Django's ValidationError for a refusal whose answer has structure beyond messages by field (a quota
    refusal's ``quota_detail`` objects, one Serve config file's errors by application): ``detail`` is sent as it
    is; Django (a form, a page) sees the messages."""

    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__({key: _messages(value) for key, value in detail.items()})
        self.detail = detail


def _messages(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [f"{k}: {m}" for k, v in value.items() for m in _messages(v)]
    if isinstance(value, list | tuple):
        return [m for v in value for m in _messages(v)] or [""]
    return [str(value)]


def error_detail(exc: Exception) -> Any:
    """What a validation error says, as the API answers it: its own ``detail`` where it carries one (Invalid, DRF's),
    else Django's messages by field (``non_field_errors`` for those of no field)."""
    detail = getattr(exc, "detail", None)
    if detail is not None:
        return detail
    if isinstance(exc, DjangoValidationError):
        return exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
    return {"non_field_errors": [str(exc)]}


class PayloadTooLarge(Exception):
    """A value larger than its limit, found while parsing (HTTP 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.detail = message


class Conflict(Exception):
    """A write based on a stale version, or one that collides with current state (HTTP 409)."""

    def __init__(self, detail: dict[str, Any]) -> None:
        super().__init__(detail)
        self.detail = detail


class PreconditionFailed(Conflict):
    """If-Match named a version that is not the current one (HTTP 412)."""


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
    detail = error_detail(exc)
    if not isinstance(detail, dict):
        detail = {"non_field_errors": detail}
    return {k: v for k, v in flat_errors(detail).items() if k != "quota_detail" and not k.startswith("quota_detail")}


def error_text(exc: Exception) -> str:
    """The same as one line for a message: "field: message; ..." (general messages without a field name)."""
    general = ("detail", "non_field_errors", "quota")
    return "; ".join(m if k in general else f"{k}: {m}" for k, messages in error_fields(exc).items() for m in messages)
