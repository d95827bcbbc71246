"""How many model slots would have served what a multiplexed deployment saw, from Ray's counters alone.

The control plane never sees the request sequence: only, per window, requests R and model loads L (Ray's
counters), the replicas N and the most models a replica held at once (k, the slots; under thrash the cache is
full), and the distinct models D Ray's residency gauge reported. From those:

- Every model must be loaded once per replica that serves it: at best L = D, so no number of slots reaches a hit
  rate above 1 - D/R (the compulsory bound).
- With N x s >= D slots in all, every model Serve routes to a replica that already holds it stays resident
  (Serve's multiplexed routing prefers replicas holding the model, and an LRU cache that holds the whole working
  set never evicts), so only the first loads miss: hit rate 1 - D/R, whatever the order of the requests.
- With fewer slots the estimate is that of LRU under uniformly spread requests: a share N x s / D of requests
  find their model (1 - D/R of them after the first loads).

The suggestion is the smallest s per replica whose estimate meets the target. When the observed hit rate is far
below the uniform estimate at today's slots, the requests defeat LRU (a scan over more models than slots) and
only N x s >= D (the working set fits) is suggested. Replaying any request sequence with D distinct models
under LRU with s >= D per replica misses only first loads, so the suggestion is checkable against a replay.
"""

from __future__ import annotations

import math
from typing import Any


def estimate_hit_rate(*, requests: float, distinct_models: int, replicas: int, slots: int) -> float:
    if requests <= 0 or distinct_models <= 0:
        return 1.0
    compulsory = max(0.0, 1 - distinct_models / requests)
    share = min(1.0, replicas * slots / distinct_models)
    return compulsory * share


def suggest_slots(
    *, requests: float, loads: float, distinct_models: int, replicas: int, slots: int, target: float
) -> dict[str, Any]:
    """The smallest slots per replica (and the replicas at today's slots) whose estimated hit rate meets target."""
    replicas = max(1, replicas)
    slots = max(1, slots)
    bound = estimate_hit_rate(
        requests=requests, distinct_models=distinct_models, replicas=replicas, slots=distinct_models
    )
    fit = math.ceil(distinct_models / replicas)
    observed = max(0.0, 1 - loads / requests) if requests else 1.0
    # Requests that defeat LRU (a scan over more models than slots) hit far less than the uniform estimate: then
    # only the whole working set helps, so no fewer slots than that are suggested.
    scan_like = observed < 0.5 * estimate_hit_rate(
        requests=requests, distinct_models=distinct_models, replicas=replicas, slots=slots
    )
    suggested = None
    for s in range(slots + 1, max(slots + 1, fit) + 1):
        if scan_like and s < fit:
            continue
        if estimate_hit_rate(requests=requests, distinct_models=distinct_models, replicas=replicas, slots=s) >= target:
            suggested = s
            break
    replicas_needed = math.ceil(distinct_models / slots)
    if suggested is None:
        suggested = max(fit, slots + 1)
        text = (
            f"even with every model resident ({suggested} slots per replica) the hit rate would be {bound:.0%}, "
            f"under the {target:.0%} asked: {distinct_models} models were each loaded at least once in "
            f"{requests:g} requests"
        )
        reachable = False
    else:
        est = estimate_hit_rate(requests=requests, distinct_models=distinct_models, replicas=replicas, slots=suggested)
        text = (
            f"raise max_num_models_per_replica from {slots} to {suggested} (estimated hit rate {est:.0%}),"
            f" or run {replicas_needed} replicas at {slots} slots"
        )
        reachable = True
    return {
        "slots_per_replica": suggested,
        "replicas_at_current_slots": replicas_needed,
        "estimated_hit_rate": round(
            estimate_hit_rate(requests=requests, distinct_models=distinct_models, replicas=replicas, slots=suggested), 4
        ),
        "best_possible_hit_rate": round(bound, 4),
        "target_hit_rate": target,
        "reachable": reachable,
        "observed_hit_rate": round(observed, 4),
        "pattern": "scan-like (defeats LRU)" if scan_like else "spread",
        "text": text,
        "how": (
            "Estimated from Ray's counters (requests, loads), the slots a replica filled and the distinct models "
            "Ray reported resident in the window; the control plane does not see the request order. With every "
            "distinct model resident only first loads miss; with fewer slots, LRU under uniformly spread requests "
            "is assumed, unless the observed hit rate is far below that estimate (a scan that defeats LRU): then "
            "only slots for every distinct model are suggested."
        ),
    }
