"""What a team that is not staff may read of a cluster's shared state: pure functions over names.

A cluster is shared by teams; its drift, push errors and unmanaged apps can quote any team's config (an
``env_vars`` secret, a module name, an app name). A team reads only its own apps' part; everything else is said
without its content.
"""

from __future__ import annotations

from collections.abc import Iterable

from .models import SyncRun

NEUTRAL = {
    SyncRun.ErrorKind.UNREACHABLE: "Ray did not answer; the push is retried with backoff.",
    SyncRun.ErrorKind.REFUSED: "Ray refused the merged config.",
    SyncRun.ErrorKind.INVALID: "The merged config failed Ray's schema.",
    SyncRun.ErrorKind.ABANDONED: "The worker running this push stopped; it is retried.",
}


def push_error_for_team(error: str, error_kind: str, faults: dict | None, own: Iterable[str]) -> str:
    """A push's error as a team sees it: its own apps' faults in full, any other cause in one neutral sentence
    (staff see Ray's text)."""
    if not error and not faults:
        return ""
    own = set(own)
    faults = faults or {}
    mine = {name: reason for name, reason in faults.items() if name in own}
    others = len(faults) - len(mine)
    parts = [f"{name}: {reason}" for name, reason in sorted(mine.items())]
    if others:
        parts.append(f"{others} app(s) of other teams were at fault and left out of the push; yours were not.")
    if not parts:
        parts.append(NEUTRAL.get(error_kind, "The push failed.") + " Staff see Ray's answer.")
    return " ".join(parts)


def drift_for_team(drift: list[dict] | None, own: Iterable[str]) -> list[dict]:
    """The drift entries of the team's own apps (with their values: they are the team's); none of anyone else's."""
    own = set(own)
    return [d for d in drift or [] if d.get("app") in own]
