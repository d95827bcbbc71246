"""What a team reads of an incident, and what it is told.

A team's own incident (its app, its quota) is the team's in full. A cluster's incident (push failed, drift,
unreachable) is shared by every team with apps there, and its evidence can quote any of them; each team reads and
hears only its own apps' part of it, staff the whole. The same view feeds the API, the pages, the webhook
payloads and the mails, so no channel says more than another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from apps.applications.selectors import own_serve_names
from apps.clusters.visibility import drift_for_team, push_error_for_team
from apps.teams.models import Role
from apps.teams.principal import Principal

from .models import Delivery, Incident, IncidentAck


def is_shared(incident: Incident) -> bool:
    return incident.team_id is None


def team_summary(incident: Incident, own: set[str]) -> str:
    """The summary as a team with the apps ``own`` on the incident's cluster sees it."""
    if not is_shared(incident):
        return incident.summary
    name = incident.cluster.name if incident.cluster_id else "the cluster"
    if incident.kind == "drift":
        mine = sorted({d.get("app", "") for d in drift_for_team(incident.evidence.get("drift"), own)})
        where = f"your apps {', '.join(mine)}" if mine else "apps of other teams, not yours"
        return f"{name} runs something other than its stored configs ({where})"[:300]
    return incident.summary  # the other shared kinds name no team's app


def team_evidence(incident: Incident, own: set[str]) -> dict[str, Any]:
    """The evidence as that team sees it: its own apps' part, never another team's values."""
    evidence = incident.evidence or {}
    if not is_shared(incident):
        return evidence
    if incident.kind == "drift":
        return {"drift": drift_for_team(evidence.get("drift"), own), "policy": evidence.get("policy")}
    if incident.kind == "push_failed":
        error = push_error_for_team(
            evidence.get("error", ""), evidence.get("error_kind", ""), evidence.get("faults"), own
        )
        return {"error": error}
    if incident.kind == "cluster_unreachable":
        return {"last_seen_at": evidence.get("last_seen_at")}
    if incident.kind == "compaction_waiting":
        return {"plan": evidence.get("plan"), "gpu_hours_per_day": evidence.get("gpu_hours_per_day")}
    return {}


def own_names_of_team(incident: Incident, team_id: int | None) -> set[str]:
    """The Serve names of one team's apps on the incident's cluster (what its channels may be told)."""
    if team_id is None or not incident.cluster_id:
        return set()
    from apps.applications.models import Application

    apps = Application.objects.filter(cluster_id=incident.cluster_id, team_id=team_id).select_related("team")
    return {a.serve_name for a in apps.only("id", "name", "adopted_serve_name", "team__slug")}


@dataclass
class IncidentView:
    """One incident as one principal reads it."""

    incident: Incident
    summary: str
    evidence: dict[str, Any]
    acknowledged: bool
    acknowledged_by: str | None
    acknowledged_at: Any
    can_ack: bool
    deliveries: list[Delivery] = field(default_factory=list)

    def __getattr__(self, name: str) -> Any:  # the template reads the incident's other fields through the view
        return getattr(self.incident, name)


def views(principal: Principal, incidents: list[Incident], *, with_deliveries: bool = False) -> list[IncidentView]:
    """Each incident as the principal may read it, in a fixed number of queries."""
    shared = [i for i in incidents if is_shared(i)]
    staff = principal.is_staff
    own = {} if staff else own_serve_names(principal, sorted({i.cluster_id for i in shared if i.cluster_id}))
    member_teams = set() if staff else set(principal.team_ids(Role.MEMBER))
    admin_teams = set() if staff else set(principal.team_ids(Role.ADMIN))
    acks: dict[int, IncidentAck] = {}
    if shared and not staff:
        rows = IncidentAck.objects.filter(incident__in=shared, team_id__in=principal.team_ids()).select_related("by")
        for ack in rows:
            acks.setdefault(ack.incident_id, ack)
    out = []
    for inc in incidents:
        names = own.get(inc.cluster_id, set()) if inc.cluster_id else set()
        summary = inc.summary if staff else team_summary(inc, names)
        evidence = inc.evidence if staff else team_evidence(inc, names)
        ack_by = inc.acknowledged_by.username if inc.acknowledged_by_id else None
        ack_at = inc.acknowledged_at
        team_ack = acks.get(inc.pk)
        if ack_at is None and team_ack is not None:
            ack_by, ack_at = (team_ack.by.username if team_ack.by_id else None), team_ack.at
        if staff:
            can_ack = True
        elif is_shared(inc):
            can_ack = bool(member_teams) and bool(names)  # a team with apps on the cluster, as a member
        else:
            can_ack = inc.team_id in member_teams
        view = IncidentView(
            incident=inc,
            summary=summary,
            evidence=evidence,
            acknowledged=ack_at is not None,
            acknowledged_by=ack_by,
            acknowledged_at=ack_at,
            can_ack=can_ack,
        )
        if with_deliveries:
            qs = inc.deliveries.select_related("endpoint").prefetch_related("attempt_rows")
            if not staff:
                qs = qs.filter(team_id__in=principal.team_ids())  # each team sees the deliveries to its channels
            view.deliveries = list(qs)
            for d in view.deliveries:
                # A webhook's URL, a mail's recipients and a receiver's answers: staff's, and the team's admins'.
                d.show_addresses = staff or d.team_id in admin_teams
        out.append(view)
    return out


def view(principal: Principal, incident: Incident, *, with_deliveries: bool = False) -> IncidentView:
    return views(principal, [incident], with_deliveries=with_deliveries)[0]
