"""Reading Prometheus text from Ray's metrics endpoints (the only code that fetches them)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import Any, NamedTuple

from . import bounded

USER_AGENT = "ray-serve-control-plane/1.0"


class ScrapeError(Exception):
    pass


class Sample(NamedTuple):  # a tuple: made thousands of times a scrape (a frozen dataclass cost 0.8 us each)
    family: str  # the family name (counters without _total)
    name: str  # the sample name (with _total, _bucket, _sum, _count)
    kind: str  # counter | gauge | histogram | summary | unknown
    labels: dict[str, str]
    value: float
    # The line's name and label block as written (empty for a line without labels): the same text every scrape
    # for the same series, so what is worked out from it can be remembered by it.
    head: str = ""


MAX_SD_BYTES = 4 * 1024 * 1024
MAX_METRICS_BYTES = 64 * 1024 * 1024  # a node's exposition; more is refused, never read
PAGE_CHUNK_BYTES = 1024 * 1024  # read in pieces of up to 1 MB: a 2 MB page in 64 KB pieces cost a third more CPU


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


def fetch(target: str, timeout: float = 5, max_bytes: int = MAX_METRICS_BYTES, gzip: bool = True) -> str:
    """One endpoint's exposition within ``timeout`` seconds in all, at most ``max_bytes`` of it (counted as text,
    after decompression).

    ``gzip``: ask for the page compressed. Ray's metrics agents serve it with prometheus_client, which compresses
    when asked: a worker node's page of 1-2 MB, mostly series nobody charts, crosses the network as 30-60 KB (a
    fleet of 500 clusters scraped every 15 s: about 260 MB/s plain, 7 MB/s compressed). Decompressing costs about
    0.6 ms per MB of text (benchmarks/fleet.py measures both). An endpoint that does not compress answers plain.
    """
    url = target if target.startswith("http") else f"http://{target}/metrics"
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip" if gzip else "identity"}
    try:
        resp = bounded.request(
            "GET", url, headers=headers, deadline_s=timeout, max_bytes=max_bytes, chunk_bytes=PAGE_CHUNK_BYTES
        )
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


def _trie(words: frozenset[str]) -> str:
    """A regex matching any of ``words``, their common prefixes written once (``ray_`` is read once per line, not
    once per wanted family); where a word ends and a longer one goes on, the longer is tried first."""
    tree: dict = {}
    for word in words:
        node = tree
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        if len(branches) == 1 and "" not in node:
            return branches[0]
        return f"(?:{'|'.join(branches)}){'?' if '' in node else ''}"

    return emit(tree)


@lru_cache(maxsize=64)
def _scanner(wanted: frozenset[str]) -> re.Pattern:
    """One C-level pass over the page finds, at each line's start (the newline is the literal prefix the regex
    engine looks for): a wanted family's line (groups 1-3: the line, its sample name as _HEAD reads it, the family),
    a TYPE line (groups 4-5: the name and its kind), or a line that starts with no metric name (group 6)."""
    return re.compile(
        rf"\n(?:((({_trie(wanted)})(?=[_{{ \t\n]|$)[^{{ \t\n]*)[^\n]*)"
        r"|# TYPE[ \t]+(\S+)[ \t]+(\S+)|([^#a-zA-Z_:\n]))"
    )


def parse(text: str, wanted: set[str]) -> Iterator[Sample]:
    """Samples of the wanted families; raises ScrapeError on malformed exposition text.

    Only the wanted lines are found (one C-level pass of a regex over the page, which also reads the TYPE lines and
    finds any line that starts with no metric name) and taken apart, so parsing costs what is kept, not the page: a
    node's page of 2 MB, most of it families nobody reads, is parsed in about 2 ms where a Python loop over its lines
    took 11. The page as a whole is still checked as a full parser would: a line that starts with no metric name
    (an HTML error page, a cut-off answer) refuses it, and a page whose braces do not pair is checked line by line.
    Families, sample names and kinds are those prometheus_client's parser gives (tests compare the two on real
    pages), in the page's order.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    framed = "\n" + text
    types: dict[str, str] = {}
    found: list[tuple[int, str, str, str]] = []  # (where, line, family, sample name)
    for match in _scanner(frozenset(wanted)).finditer(framed):
        which = match.lastindex
        if which == 1:
            line, name, family = match.group(1, 2, 3)
            if name in wanted:
                found.append((match.start(), line, name, name))
            elif name[len(family) :] in _SUFFIXES:
                found.append((match.start(), line, family, name))
        elif which == 5:
            types[match.group(4)] = match.group(5)  # the last one stands, as before
        else:
            number = framed.count("\n", 0, match.start() + 1)
            line = framed[match.start() + 1 :].split("\n", 1)[0]
            raise ScrapeError(f"malformed exposition text at line {number}: {line[:120]!r}")
    if text.count("{") != text.count("}"):
        _check_every_line(text, wanted)  # a brace inside a label value, or a cut-off line: which one decides
    for pos, line, family, name in found:
        labels, value, head = _sample(line, framed, pos)
        kind = types.get(family) or types.get(name) or "unknown"
        if kind == "untyped":
            kind = "unknown"
        yield Sample(family, name, kind, labels, value, head)


_TAIL = re.compile(r"[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*")
# A wanted line's name and label block -> its labels. The same series come back every scrape with only their value
# changed, so their label blocks are taken apart once (with the line found whole by the scanner, a page of 5,000
# series parses at 212k-348k samples/s, was 146k; benchmarks/metrics_bench.py). Bounded: Ray's label blocks are long
# (about 0.5 KB, and as much again for the labels, their names and values shared), so at most 131,072 are kept
# (about 130 MB: the series of some 65 clusters of 5 nodes); past that the memo starts over.
_HEADS: dict[str, dict[str, str]] = {}
_HEADS_MAX = 131_072


def _sample(line: str, framed: str, pos: int) -> tuple[dict[str, str], float, str]:
    """One wanted line's labels, value and head (its name and label block; empty without labels). The line starts
    after ``framed[pos]``; its number is counted only for an error."""
    end = line.rfind("}")  # a value holds no brace: the last one closes the label block
    head = line[: end + 1] if end > 0 else ""
    if head:
        known = _HEADS.get(head)
        if known is not None:
            tail = _TAIL.fullmatch(line, end + 1)
            if tail is not None:
                try:
                    return dict(known), float(tail.group(1)), head
                except ValueError:
                    pass  # the full grammar says why
    labels, value = _parse_sample(line, lambda: framed.count("\n", 0, pos + 1))
    if head:
        if len(_HEADS) >= _HEADS_MAX:
            _HEADS.clear()
        _HEADS[head] = {sys.intern(k): sys.intern(v) for k, v in labels.items()}  # names and values repeat
    return labels, value, head


def _parse_sample(line: str, number: Any) -> tuple[dict[str, str], float]:
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
