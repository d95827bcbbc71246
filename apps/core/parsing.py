"""Documents from users, parsed at a bounded cost: size and nesting are checked in one pass over the text before
any parser runs, JSON is parsed as JSON, YAML with libyaml's safe C loader.

PyYAML's pure-Python parser spends seconds on a 40 KB document nested deeply and ends in a RecursionError (a 500);
a size and a depth limit checked first make any document cost at most one linear scan and one C parse.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from django.core.exceptions import ValidationError

from .errors import PayloadTooLarge

MAX_DEPTH = 32  # a Serve config is about 8 deep (applications > app > deployments > ... > env_vars)
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """An upper bound of a JSON or YAML document's nesting: flow brackets outside quotes plus block indentation
    levels (a ``- `` at a line's start opens one too). Stops counting past ``limit``."""
    deepest = 0
    flow = 0
    quote = ""
    indents: list[int] = []
    for line in text.splitlines():
        if not quote and flow == 0:
            stripped = line.lstrip(" ")
            if stripped and not stripped.startswith("#"):
                indent = len(line) - len(stripped)
                while stripped.startswith("- "):  # "- - - x": each dash is a sequence inside the last
                    indents = [i for i in indents if i < indent]
                    indents.append(indent)
                    indent += 2
                    stripped = stripped[2:].lstrip(" ")
                indents = [i for i in indents if i < indent]
                indents.append(indent)
        i, n = 0, len(line)
        while i < n:
            c = line[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 1
                elif c == quote:
                    quote = ""
            elif c in "\"'":
                quote = c
            elif c in "[{":
                flow += 1
            elif c in "]}":
                flow = max(0, flow - 1)
            elif c == "#" and (i == 0 or line[i - 1] in " \t"):
                break  # a comment
            deepest = max(deepest, flow + len(indents))
            if deepest > limit:
                return deepest
            i += 1
        if quote == "'":
            pass  # a single-quoted scalar may span lines
    return deepest


def load_document(raw: bytes | str, content_type: str, *, max_bytes: int, field: str = "file") -> Any:
    """A JSON or YAML document from a request body, within ``max_bytes`` (else 413) and ``MAX_DEPTH`` levels (else
    400), each naming its limit. YAML anchors and aliases are refused (a small file could expand without bound)."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The {field} is larger than {max_bytes // 1024} KiB, the most accepted.")
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    if nesting_depth(text) > MAX_DEPTH:
        raise ValidationError({field: [f"Nested more than {MAX_DEPTH} levels deep, the most accepted."]})
    as_json = "json" in content_type or (text.lstrip()[:1] in ("{", "[") and "yaml" not in content_type)
    if as_json:
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            if "json" in content_type:
                where = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
                raise ValidationError({field: [f"Not valid JSON: {getattr(exc, 'msg', exc)}{where}."]}) from exc
            # not JSON after all: flow-style YAML, read below
    try:
        for event in yaml.parse(text, Loader=LOADER):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValidationError({field: ["YAML anchors and aliases (& and *) are not accepted."]})
        return yaml.load(text, Loader=LOADER)  # noqa: S506 - the safe C loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValidationError({field: [f"Not valid YAML: {getattr(exc, 'problem', None) or exc}{where}."]}) from exc
    except RecursionError as exc:
        raise ValidationError({field: [f"Nested more than {MAX_DEPTH} levels deep, the most accepted."]}) from exc
