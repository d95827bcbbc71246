"""What is wrong now: one function per kind of rule, each a fixed number of queries however many subjects.

A condition is a subject (an app, a team's pool, a cluster, a plan) for which a rule's test holds now; the
engine (``services.evaluate``) turns conditions into incidents. Thresholds come from each subject's own rule
(``Rules.for_subject``), so a team's or an app's override changes only its own verdict.
"""

from __future__ import annotations

from .applications import app_failed, crash_loop, rollout_rolled_back
from .base import Condition, Rules
from .clusters import cluster_unreachable, compaction_waiting, drift, push_failed
from .quotas import admission_refused, quota_high
from .usage import app_gpus, cache_thrash, idle_gpu

__all__ = ["EVALUATORS", "Condition", "Rules", "app_gpus"]


EVALUATORS = {
    "app_failed": app_failed,
    "crash_loop": crash_loop,
    "push_failed": push_failed,
    "cluster_unreachable": cluster_unreachable,
    "drift": drift,
    "quota_high": quota_high,
    "admission_refused": admission_refused,
    "idle_gpu": idle_gpu,
    "cache_thrash": cache_thrash,
    "compaction_waiting": compaction_waiting,
    "rollout_rolled_back": rollout_rolled_back,
}
