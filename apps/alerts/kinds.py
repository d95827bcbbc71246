"""The kinds of alert rule: what each watches, its parameters with their defaults and bounds, and who hears it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Param:
    default: float
    low: float
    high: float
    help: str


@dataclass(frozen=True)
class Kind:
    name: str
    label: str
    severity: str
    staff_only: bool  # only staff define it (it watches clusters or compaction); teams still hear cluster ones
    params: dict[str, Param] = field(default_factory=dict)


KINDS: dict[str, Kind] = {
    k.name: k
    for k in [
        Kind("app_failed", "Application DEPLOY_FAILED or UNHEALTHY", "critical", False),
        Kind(
            "crash_loop",
            "A replica restarts repeatedly (crash loop)",
            "critical",
            False,
            {
                "starts": Param(3, 2, 1000, "Replica starts without a config change that make a crash loop."),
                "window_s": Param(600, 30, 86400, "Within this many seconds."),
            },
        ),
        Kind("push_failed", "A push of the cluster's Serve config failed", "critical", True),
        Kind(
            "cluster_unreachable",
            "Cluster unreachable",
            "critical",
            True,
            {"for_s": Param(120, 0, 86400, "Unreachable for at least this many seconds.")},
        ),
        Kind("drift", "Cluster drifted from the stored configs", "warning", True),
        Kind(
            "quota_high",
            "A team's allocation above a share of its quota",
            "warning",
            False,
            {"percent": Param(90, 1, 100, "Allocation above this percentage of the quota in a pool.")},
        ),
        Kind(
            "admission_refused",
            "A request refused by quota admission",
            "warning",
            False,
            {"window_s": Param(3600, 60, 7 * 86400, "Open while a refusal happened within this many seconds.")},
        ),
        Kind(
            "idle_gpu",
            "GPUs allocated to an app that serves (almost) nothing",
            "warning",
            False,
            {
                "window_s": Param(3600, 10, 7 * 86400, "Idle for this many seconds."),
                "max_requests": Param(0, 0, 1e9, "At most this many requests in the window counts as idle."),
                "max_utilization": Param(
                    5,
                    0,
                    100,
                    "Where Ray reads the GPUs (NVML): at most this utilisation (percent of one GPU, averaged over "
                    "the window) counts as idle, whatever the requests.",
                ),
            },
        ),
        Kind(
            "cache_thrash",
            "A multiplexed deployment's model cache thrashes",
            "warning",
            False,
            {
                "window_s": Param(900, 10, 86400, "Look at this many seconds of counters."),
                "max_hit_rate": Param(0.5, 0, 1, "Hit rate under this..."),
                "min_loads_per_min": Param(1, 0, 1e6, "...while model loads per minute stay over this."),
                "target_hit_rate": Param(0.8, 0.01, 0.999, "The hit rate the suggestion aims for."),
            },
        ),
        Kind(
            "rollout_rolled_back",
            "A canary rollout rolled back on its own (a gate failed, the new version failed, or time ran out)",
            "critical",
            False,
            {"window_s": Param(3600, 60, 7 * 86400, "Open for this many seconds after the rollback.")},
        ),
        Kind(
            "compaction_waiting",
            "A compaction plan that would free nodes is waiting",
            "info",
            True,
            {"wait_s": Param(3600, 60, 30 * 86400, "Waiting longer than this many seconds.")},
        ),
    ]
}
KIND_CHOICES = [(k.name, k.label) for k in KINDS.values()]


def effective_params(kind: str, params: dict[str, Any] | None) -> dict[str, float]:
    spec = KINDS[kind].params
    given = params or {}
    return {name: float(given.get(name, p.default)) for name, p in spec.items()}


def validate_params(kind: str, params: Any) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Clean params for kind, or errors keyed ``params.<name>`` naming the reason."""
    if kind not in KINDS:
        return {}, {"kind": [f"Unknown kind {kind!r}; one of: {', '.join(KINDS)}."]}
    if params in (None, ""):
        params = {}
    if not isinstance(params, dict):
        return {}, {"params": ["Must be an object of parameter names to numbers."]}
    spec = KINDS[kind].params
    errors: dict[str, list[str]] = {}
    clean: dict[str, float] = {}
    for name, value in params.items():
        if name not in spec:
            known = ", ".join(spec) or "none"
            errors[f"params.{name}"] = [f"Not a parameter of {kind} (its parameters: {known})."]
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors[f"params.{name}"] = ["Must be a number."]
            continue
        p = spec[name]
        if not p.low <= value <= p.high:
            errors[f"params.{name}"] = [f"Must be between {p.low:g} and {p.high:g}."]
            continue
        clean[name] = value
    return clean, errors
