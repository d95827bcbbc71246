"""The health gates of a rollout step: the new version's 5xx share and p95 latency against the running version's,
over the step, from Ray's own series (the proxy's ``ray_serve_num_http_requests`` and
``ray_serve_http_request_latency_ms`` of each version's application), through the cluster's metrics source
(embedded store or Prometheus, the same reads)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from apps.clusters.models import Cluster
from apps.metrics.sources import HTTP_LATENCY, HTTP_REQUESTS, SourceUnavailable, source_for


@dataclass
class Side:
    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def json(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": round(self.error_rate, 4)}


@dataclass
class Verdict:
    verdict: str  # pass | fail | waiting
    reason: str
    stable: Side
    canary: Side

    def json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "stable": self.stable.json(),
            "canary": self.canary.json(),
        }


def p95(buckets: dict[float, float]) -> float | None:
    """The 95th percentile of a histogram's increase: cumulative counts by upper bound (Prometheus' ``le``), linear
    within the bucket, as PromQL's histogram_quantile does."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = 0.95 * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: its lower edge, as histogram_quantile answers
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, count
    return lower


def read_sides(cluster: Cluster, names: dict[str, str], window_s: float, now: datetime) -> dict[str, Side] | None:
    """Requests, 5xx answers and p95 of each side (``{"stable": serve name, "canary": serve name}``) over the last
    ``window_s`` seconds; None when the source has nothing covering the window or does not answer."""
    source = source_for(cluster)
    try:
        counts = source.window(cluster, [HTTP_REQUESTS], window_s, ("application", "status_code"), now)
        latency = source.window(cluster, [HTTP_LATENCY], window_s, ("application", "le"), now)
    except SourceUnavailable:
        return None
    if counts is None or latency is None:
        return None
    out = {}
    for side, app in names.items():
        s = Side()
        for (application, code), value in counts.sums.get(HTTP_REQUESTS, {}).items():
            if application == app:
                s.requests += round(value)
                s.errors += round(value) if str(code).startswith("5") else 0
        buckets: dict[float, float] = {}
        for (application, le), value in latency.sums.get(HTTP_LATENCY, {}).items():
            if application == app and le:
                bound = float("inf") if le in ("+Inf", "Inf", "inf") else float(le)
                buckets[bound] = buckets.get(bound, 0.0) + value
        s.p95_ms = round(v, 1) if (v := p95(buckets)) is not None else None
        out[side] = s
    return out


def judge(sides: dict[str, Side] | None, gates: dict[str, Any]) -> Verdict:
    """Fail when the new version errs or slows beyond the gates; pass when it has served enough requests within
    them; wait otherwise (no verdict is drawn from too little data)."""
    stable, canary = (sides or {}).get("stable", Side()), (sides or {}).get("canary", Side())
    if sides is None:
        return Verdict(
            "waiting", "no metrics for the step yet (the source has not covered it, or did not answer)", stable, canary
        )
    need = int(gates["min_requests"])
    if canary.requests < need:
        return Verdict(
            "waiting", f"{canary.requests} of the {need} requests to the new version a verdict needs", stable, canary
        )
    baseline = stable.error_rate if stable.requests >= need else 0.0
    allowed = baseline + float(gates["max_error_rate_increase"])
    if canary.error_rate > allowed:
        return Verdict(
            "fail",
            f"the new version answered 5xx to {canary.error_rate:.1%} of {canary.requests} requests "
            f"(the running version {stable.error_rate:.1%}; at most {allowed:.1%} allowed)",
            stable,
            canary,
        )
    if canary.p95_ms is not None and stable.p95_ms is not None and stable.requests >= need:
        limit = max(stable.p95_ms * float(gates["max_p95_ratio"]), stable.p95_ms + float(gates["p95_slack_ms"]))
        if canary.p95_ms > limit:
            return Verdict(
                "fail",
                f"the new version's p95 latency is {canary.p95_ms:g} ms (the running version {stable.p95_ms:g} ms; "
                f"at most {limit:g} ms allowed)",
                stable,
                canary,
            )
    return Verdict(
        "pass",
        f"5xx {canary.error_rate:.1%} (running version {stable.error_rate:.1%}), p95 "
        f"{_ms(canary.p95_ms)} (running version {_ms(stable.p95_ms)}) over {canary.requests} requests",
        stable,
        canary,
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"
