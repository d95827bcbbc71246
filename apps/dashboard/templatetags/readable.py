"""Structured values (audit before/after, incident evidence) as people read them: a one-line summary cut at a word,
each field on its own line, and the whole value as indented JSON on demand."""

from __future__ import annotations

import json
from typing import Any

from django import template

from .ray_text import ray_cause, strip_ansi

register = template.Library()


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word (never mid-word), with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    head = text[: limit - 1]
    space = head.rfind(" ")
    return (head[:space] if space > limit // 2 else head).rstrip(" ,;:") + "…"


def _value(value: Any, limit: int = 120) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f"{k}: {_value(v, 40)}" for k, v in list(value.items())[:4])
        more = f", +{len(value) - 4} more" if len(value) > 4 else ""
        return _cut(f"{{{inner}{more}}}" if value else "{}", limit)
    if isinstance(value, list | tuple):
        if all(not isinstance(v, dict | list | tuple) for v in value):
            shown = ", ".join(_value(v, 40) for v in value[:5])
            return _cut(shown + (f" (+{len(value) - 5} more)" if len(value) > 5 else ""), limit) or "none"
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    if value is None:
        return "none"
    text = str(value)
    if "\n" in text or "\x1b" in text:  # a message from Ray: its cause
        text = ray_cause(text)
    return _cut(text, limit)


@register.filter
def summary(value: Any, limit: int = 160) -> str:
    """``{"role": "admin", "user": "bob"}`` -> ``role: admin; user: bob``, cut at a word."""
    if isinstance(value, dict):
        return _cut("; ".join(f"{k}: {_value(v)}" for k, v in value.items()), int(limit))
    return _value(value, int(limit))


@register.filter
def fields(value: Any) -> list[tuple[str, str]]:
    """A dict's fields, each summarised on its own line (label, text)."""
    if not isinstance(value, dict):
        return [("value", _value(value, 300))]
    return [(str(k).replace("_", " "), _value(v, 300)) for k, v in value.items()]


@register.filter
def pretty_json(value: Any) -> str:
    return strip_ansi(json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False))


@register.filter
def ago(when: Any) -> str:
    """``just now`` under a minute, else ``5 minutes ago`` (never ``0 minutes ago``)."""
    from django.utils import timezone
    from django.utils.timesince import timesince

    if not when:
        return "never"
    if (timezone.now() - when).total_seconds() < 60:
        return "just now"
    return f"{timesince(when)} ago"


@register.filter
def param_label(name: str) -> str:
    """A rule parameter's name as a label: ``window_s`` -> ``window (seconds)``, ``max_hit_rate`` -> ``max hit
    rate``."""
    text = str(name)
    unit = ""
    if text.endswith("_s"):
        text, unit = text[:-2], " (seconds)"
    elif text.endswith("_pct") or text == "percent":
        unit = " (%)" if text != "percent" else ""
        text = text.removesuffix("_pct")
    return text.replace("_", " ") + unit
