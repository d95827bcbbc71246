"""Reading Prometheus text from Ray's metrics endpoints (the only code that fetches them)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

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


_BAD_START = re.compile(r"\n[^#a-zA-Z_:\n]")
_TYPE = re.compile(r"\n# TYPE[ \t]+(\S+)[ \t]+(\S+)")


@lru_cache(maxsize=64)
def _finder(wanted: frozenset[str]) -> re.Pattern:
    """The wanted families at a line's start: one C-level pass over the page (its literal prefix, the newline, is
    what the regex engine looks for), longest names first."""
    names = "|".join(re.escape(f) for f in sorted(wanted, key=len, reverse=True))
    return re.compile(rf"\n({names})(?=[_{{ \t\n]|$)")


def parse(text: str, wanted: set[str]) -> Iterator[Sample]:
    """Samples of the wanted families; raises ScrapeError on malformed exposition text.

    Only the wanted lines are found (one C-level pass of a regex over the page: a wanted family's name at a line's
    start) and taken apart, so parsing costs what is kept, not the page: a node's page of 2 MB, most of it
    families nobody reads, is parsed in about 2 ms where a Python loop over its lines took 11. The page as a whole
    is still checked as a full parser would: a line that starts with no metric name (an HTML error page, a cut-off
    answer) refuses it, and a page whose braces do not pair is checked line by line. Families, sample names and
    kinds are those prometheus_client's parser gives (tests compare the two on real pages), in the page's order.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    framed = "\n" + text
    bad = _BAD_START.search(framed)
    if bad is not None:
        number = framed.count("\n", 0, bad.start() + 1)
        line = framed[bad.start() + 1 :].split("\n", 1)[0]
        raise ScrapeError(f"malformed exposition text at line {number}: {line[:120]!r}")
    if text.count("{") != text.count("}"):
        _check_every_line(text, wanted)  # a brace inside a label value, or a cut-off line: which one decides
    types = {m.group(1): m.group(2) for m in _TYPE.finditer(framed)}
    found: list[tuple[int, str, str, str]] = []  # (where, line, family, name)
    for match in _finder(frozenset(wanted)).finditer(framed):
        pos = match.start()
        stop = framed.find("\n", pos + 1)
        line = framed[pos + 1 : stop if stop >= 0 else None]
        fam = match.group(1)
        name = _HEAD.match(line).group(0)
        if name in wanted:
            found.append((pos, line, name, name))
        elif name[len(fam) :] in _SUFFIXES:
            found.append((pos, line, fam, name))
    for pos, line, family, name in found:
        labels, value = _sample(line, lambda pos=pos: framed.count("\n", 0, pos + 1))
        kind = types.get(family) or types.get(name) or "unknown"
        if kind == "untyped":
            kind = "unknown"
        yield Sample(family, name, kind, labels, value)


def _sample(line: str, number: Any) -> tuple[dict[str, str], float]:
    """One wanted line's labels and value (``number()`` gives its line number, counted only for an error)."""
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
        labels, raw_value = _slow(line, number())
    try:
        return labels, float(raw_value)
    except ValueError as exc:
        raise ScrapeError(f"malformed value at line {number()}: {line[:120]!r}") from exc


def _check_every_line(text: str, wanted: set[str]) -> None:
    """The line-by-line check of a page whose braces do not pair: a line of a family nobody wants must still be a
    metric name, with its label block closed."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line or line[0] == "#":
            continue
        name = _HEAD.match(line).group(0)
        end = len(name)
        if not _NAME.match(name) or (end < len(line) and line[end] == "{" and "}" not in line):
            raise ScrapeError(f"malformed exposition text at line {number}: {line[:120]!r}")


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
