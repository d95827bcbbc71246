"""One team's failure stays that team's: when Ray refuses the merged config, find the app(s) at fault, hold them
back (their last good revision keeps running, or nothing of them), mark them failed with Ray's reason, and push
everyone else at once.

Ray's answer usually names the fault: an app's name, an ``applications.N`` path of its validation, or the module a
config names that Ray's dashboard cannot import (which Ray reports without the app). When it does not, the apps
this push changes are bisected: the config is tried with half of them at what Ray last accepted of them, which
Ray accepts or refuses as a whole, until one app is left. A trial Ray accepts deploys the good half at once.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from django.db import transaction
from django.db.models import F

from apps.applications.models import Application
from apps.audit.services import audit_record
from apps.clusters.models import Cluster
from apps.servespec.spec import named_code
from workers.clients.ray_dashboard import RayRejected

from .config import MergedConfig

log = logging.getLogger(__name__)
MODULE = re.compile(r"No module named ['\"]([\w.]+)['\"]|cannot import name ['\"](\w+)['\"]")
INDEX = re.compile(r"applications[.\[](\d+)")


def culprits_from_message(message: str, merged: MergedConfig) -> dict[str, str]:
    """The apps Ray's refusal names (by name, by ``applications.N``, or by a module their config names)."""
    reason = _reason(message)
    names = list(merged.app_configs)
    found: dict[str, str] = {}
    for name in names:
        if re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", message):
            found[name] = reason
    applications = merged.config.get("applications") or []
    for m in INDEX.finditer(message):
        i = int(m.group(1))
        if i < len(applications):
            found[applications[i].get("name", "")] = reason
    for m in MODULE.finditer(message):
        module = m.group(1) or m.group(2)
        for name, cfg in merged.app_configs.items():
            for _, code in named_code(cfg):
                path = code.replace(":", ".")
                if path == module or path.startswith(module + ".") or module.startswith(path.split(".")[0]):
                    found[name] = reason
    return {n: r for n, r in found.items() if n and n not in merged.carried}


def _reason(message: str) -> str:
    """Ray's refusal in one readable line: the last line that says something, without ANSI colour codes."""
    text = re.sub(r"\x1b\[[0-9;]*m|\[\d+m", "", message)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text)[:1000]


def bisect(put: Any, merged: MergedConfig, suspects: list[str]) -> tuple[str | None, int]:
    """One app among ``suspects`` whose config Ray refuses, found by trials (``put``: the transport's PUT).
    Returns it (None when every trial is refused: the fault is not in what this push changes) and the trials."""
    others = set(merged.accepted) - set(suspects)
    remaining = list(suspects)
    trials = 0
    while len(remaining) > 1:
        half = remaining[: len(remaining) // 2]
        held = others | (set(suspects) - set(half))  # try only ``half`` of what is left on top of the accepted
        trials += 1
        try:
            put(merged.without(held))
        except RayRejected:
            remaining = half
        else:
            remaining = remaining[len(half) :]
    if len(remaining) == 1 and trials == 0:
        return remaining[0], 0
    if len(remaining) == 1:
        trials += 1  # confirm: the last suspect alone on top of what was accepted
        try:
            put(merged.without(others | (set(suspects) - set(remaining))))
        except RayRejected:
            return remaining[0], trials
        return None, trials
    return None, trials


@transaction.atomic
def hold_back(*, cluster: Cluster, faults: dict[str, str], source: str) -> list[int]:
    """Mark these apps' current revisions at fault (left out of the push until the team changes them) and ask for
    a push of everyone else. Returns the apps' ids."""
    apps = [
        a
        for a in Application.objects.select_for_update(of=("self",))
        .filter(cluster=cluster, deleted_at__isnull=True, current_revision__isnull=False)
        .select_related("team")
        if a.serve_name in faults
    ]
    for app in apps:
        app.fault_revision_id = app.current_revision_id
        app.fault = faults[app.serve_name][:4000]
        app.state = Application.State.DEPLOY_FAILED
        app.status_message = app.fault
        app.save(update_fields=["fault_revision", "fault", "state", "status_message"])
        audit_record(
            actor=f"system ({source})",
            team=app.team,
            action="application.held_back",
            obj=app,
            source="task",
            after={"revision": app.current_revision_id, "reason": app.fault[:500]},
        )
        log.warning("cluster %s: %s held back (%s): %s", cluster.name, app.serve_name, source, app.fault[:200])
    if apps:
        Cluster.objects.filter(pk=cluster.pk).update(desired_generation=F("desired_generation") + 1)
    return [a.pk for a in apps]
