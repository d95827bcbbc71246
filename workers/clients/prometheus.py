"""Reading Prometheus text from Ray's metrics endpoints (the only code that fetches them)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import requests
from prometheus_client.parser import text_string_to_metric_families

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


def discover_targets(dashboard_url: str, timeout: float = 5, token: str = "") -> list[str]:
    """host:port of every metrics endpoint, from the dashboard's Prometheus service discovery."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = requests.get(dashboard_url.rstrip("/") + "/api/prometheus/sd", timeout=timeout, headers=headers)
        resp.raise_for_status()
        groups = resp.json()
        return sorted({t for g in groups for t in g.get("targets", [])})
    except (requests.RequestException, ValueError, TypeError, AttributeError) as exc:
        raise ScrapeError(f"service discovery at {dashboard_url} failed: {exc}") from exc


def fetch(target: str, timeout: float = 5) -> str:
    url = target if target.startswith("http") else f"http://{target}/metrics"
    try:
        resp = requests.get(url, timeout=timeout, headers={"User-Agent": USER_AGENT})
        resp.raise_for_status()
    except requests.RequestException as exc:
        raise ScrapeError(f"{target}: {type(exc).__name__}: {str(exc)[:200]}") from exc
    return resp.text


def parse(text: str, wanted: set[str]) -> Iterator[Sample]:
    """Samples of the wanted families; raises ScrapeError on malformed exposition text."""
    try:
        for family in text_string_to_metric_families(text):
            if family.name not in wanted:
                continue
            for s in family.samples:
                yield Sample(family.name, s.name, family.type, dict(s.labels), float(s.value))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ScrapeError(f"malformed exposition text: {str(exc)[:200]}") from exc
