"""Reading Prometheus text from Ray's metrics endpoints (the only code that fetches them)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from . import bounded

USER_AGENT = "ray-serve-control-plane/1.0"


class ScrapeError(Exception):
    pass


@dataclass(frozen=True)
class Sample:
    family: str  # the family name (counters without _total)
    name: str  # the sample name (with _total, _bucket, _sum, _count)
    kind: str  # counter | gauge | histogram | summary | unknown
    labels: dict[str, str]
    value: float


MAX_SD_BYTES = 4 * 1024 * 1024
MAX_METRICS_BYTES = 64 * 1024 * 1024  # a node's exposition; more is refused, never read


def discover_targets(dashboard_url: str, timeout: float = 5, token: str = "") -> list[str]:
    """host:port of every metrics endpoint, from the dashboard's Prometheus service discovery (one total deadline,
    a bounded answer)."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = dashboard_url.rstrip("/") + "/api/prometheus/sd"
    try:
        resp = bounded.request("GET", url, headers=headers, deadline_s=timeout, max_bytes=MAX_SD_BYTES)
        if resp.status >= 400:
            raise ScrapeError(f"service discovery at {dashboard_url} failed: HTTP {resp.status}")
        groups = json.loads(resp.body)
        return sorted({t for g in groups for t in g.get("targets", [])})
    except (bounded.CallFailed, ValueError, TypeError, AttributeError) as exc:
        raise ScrapeError(f"service discovery at {dashboard_url} failed: {exc}") from exc


def fetch(target: str, timeout: float = 5, max_bytes: int = MAX_METRICS_BYTES) -> str:
    """One endpoint's exposition within ``timeout`` seconds in all, at most ``max_bytes`` of it."""
    url = target if target.startswith("http") else f"http://{target}/metrics"
    try:
        resp = bounded.request("GET", url, headers={"User-Agent": USER_AGENT}, deadline_s=timeout, max_bytes=max_bytes)
    except bounded.CallFailed as exc:
        raise ScrapeError(f"{target}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if resp.status >= 400:
        raise ScrapeError(f"{target}: HTTP {resp.status}")
    return resp.text


_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$'
)
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\]|\\.)*)"[ \t]*(?:,|$)')
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
_HEAD = re.compile(r"[^{ \t]*")
_FAST = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{([^\\{}]*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$")
_PAIRS = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)",?')
_PAIRS_ALL = re.compile(r'(?:[a-zA-Z_][a-zA-Z0-9_]*="[^"]*",?)*')
_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_UNESCAPE = re.compile(r"\\(.)")


def _unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: "\n" if m.group(1) == "n" else m.group(1), value) if "\\" in value else value


def parse(text: str, wanted: set[str]) -> Iterator[Sample]:
    """Samples of the wanted families; raises ScrapeError on malformed exposition text.

    A line of a family nobody wants is skipped by its name alone (most of what Ray exports), and only wanted lines
    are taken apart, so parsing costs what is kept. Families, sample names and kinds are those
    prometheus_client's parser gives (tests compare the two on real pages).
    """
    types: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "#":
            if line.startswith("# TYPE "):
                parts = line.split()
                if len(parts) >= 4:
                    types[parts[2]] = parts[3]
            continue
        name = _HEAD.match(line).group(0)
        end = len(name)
        family = name
        if name not in wanted:
            for suffix in _SUFFIXES:
                if name.endswith(suffix) and name[: -len(suffix)] in wanted:
                    family = name[: -len(suffix)]
                    break
            else:
                # Not read, only checked cheaply: a page that is not exposition text (an HTML error page, a cut-off
                # answer) is refused as a whole, as a full parser would.
                if not _NAME.match(name) or (end < len(line) and line[end] == "{" and "}" not in line):
                    raise ScrapeError(f"malformed exposition text at line {number}: {line[:120]!r}")
                continue
        fast = _FAST.match(line)
        if fast is not None:  # no escapes and no braces in values: one C-level pass over the labels
            block = fast.group(1)
            if block and _PAIRS_ALL.fullmatch(block) is None:
                fast = None  # spaces, or not label pairs at all: the full grammar decides
            else:
                pairs = _PAIRS.findall(block) if block else []
        if fast is not None:
            labels = dict(pairs)
            raw_value = fast.group(2)
        else:
            labels, raw_value = _slow(line, number)
        try:
            value = float(raw_value)
        except ValueError as exc:
            raise ScrapeError(f"malformed value at line {number}: {line[:120]!r}") from exc
        kind = types.get(family) or types.get(name) or "unknown"
        if kind == "untyped":
            kind = "unknown"
        yield Sample(family, name, kind, labels, value)


def _slow(line: str, number: int) -> tuple[dict[str, str], str]:
    """A line with escapes or braces inside label values, taken apart by the full grammar."""
    match = _LINE.match(line)
    if match is None:
        raise ScrapeError(f"malformed exposition text at line {number}: {line[:120]!r}")
    labels: dict[str, str] = {}
    block = match.group(2)
    pos = 0
    while block and pos < len(block):
        lm = _LABEL.match(block, pos)
        if lm is None:
            if block[pos:].strip(" \t,"):
                raise ScrapeError(f"malformed labels at line {number}: {line[:120]!r}")
            break
        labels[lm.group(1)] = _unescape(lm.group(2))
        pos = lm.end()
    return labels, match.group(3)
