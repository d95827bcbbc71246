"""Ray's messages as people read them: the cause in one line first (the last exception line of a traceback), the
rest folded; terminal colour codes removed."""

from __future__ import annotations

import re

from django import template

register = template.Library()

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\[[0-9;]{1,12}m")  # the escape sequence, or what is left once ESC is lost
EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?\w*(?:Error|Exception|Exit|Interrupt|Failure)\b.*?:\s*\S")


@register.filter
def strip_ansi(text: object) -> str:
    return ANSI.sub("", str(text or ""))


@register.filter
def ray_cause(text: object, limit: int = 300) -> str:
    """The line that says what went wrong: the last ``SomeError: ...`` line of a traceback, else the last line."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    if not lines:
        return ""
    cause = next((line for line in reversed(lines) if EXCEPTION_LINE.match(line)), lines[-1])
    return cause if len(cause) <= limit else cause[: limit - 1] + "…"
