"""A shared cluster as one principal may read it: the one place the API, the pages and the exports ask.

Staff read everything. A team reads the cluster's registration, health and capacity, and of what the cluster
says about applications only its own part: its apps' drift (with values: they are its own), its apps' faults in a
push and a neutral sentence for anyone else's, its replicas in full and other teams' replicas as resources only.
Unmanaged apps (their full configs), Ray's raw messages and the addresses of Ray's own endpoints (the dashboard,
the GCS, Prometheus: whole-cluster control) are staff's.
"""

from __future__ import annotations

from typing import Any

from apps.applications.selectors import own_serve_names
from apps.clusters.models import Cluster, SyncRun
from apps.clusters.visibility import drift_for_team, push_error_for_team
from apps.rollouts.placement import side_names
from apps.teams.principal import Principal

# Fields of a cluster only staff read: where Ray's whole-cluster endpoints are, and how it is reached.
STAFF_FIELDS = (
    "dashboard_url",
    "gcs_address",
    "metrics_targets",
    "prometheus_url",
    "prometheus_matchers",
    "ray_cluster_template",
    "k8s_namespace",
    "k8s_name",
    "unmanaged_apps",
    "metrics_error",
)


class ClusterLens:
    """What one principal reads of some clusters, with the names of its apps there looked up once."""

    def __init__(self, principal: Principal, cluster_ids: list[int] | None = None) -> None:
        """``cluster_ids``: the clusters to be read (None: any)."""
        self.staff = principal.is_staff
        own = {} if self.staff else own_serve_names(principal, cluster_ids)
        # a rollout's new version and splitter are their app's team's too
        self.own: dict[int, set[str]] = {
            c: names | {s for n in names for s in side_names(n)} for c, names in own.items()
        }

    def names(self, cluster_id: int) -> set[str]:
        return self.own.get(cluster_id, set())

    def drift(self, cluster: Cluster) -> list[dict]:
        return list(cluster.drift or []) if self.staff else drift_for_team(cluster.drift, self.names(cluster.pk))

    def health_message(self, cluster: Cluster) -> str:
        if self.staff or not cluster.health_message:
            return cluster.health_message
        return "Ray's dashboard did not answer the last time it was asked (staff see its answer)."

    def run_error(self, run: SyncRun) -> str:
        if self.staff:
            return run.error
        return push_error_for_team(run.error, run.error_kind, run.faults, self.names(run.cluster_id))

    def state(self, state: dict[str, Any]) -> dict[str, Any]:
        """``cluster_state`` with other teams' replicas reduced to what they use."""
        if self.staff:
            return state
        own = self.names(state["cluster"])
        nodes = []
        for node in state["nodes"]:
            replicas = [
                r if r["app"] in own else {"other_team": True, "state": r["state"], "resources": r["resources"]}
                for r in node["replicas"]
            ]
            nodes.append({**node, "replicas": replicas})
        return {**state, "nodes": nodes}

    def cluster_fields(self, cluster: Cluster, data: dict[str, Any]) -> dict[str, Any]:
        """A serialized cluster with the fields the principal may not read blanked, and its parts narrowed."""
        data["drift"] = self.drift(cluster)
        if self.staff:
            return data
        for name in STAFF_FIELDS:
            if name in data:  # blank, of the field's own type: the schema (and clients) stay the same
                value = data[name]
                data[name] = [] if isinstance(value, list) else {} if isinstance(value, dict) else ""
        data["health_message"] = self.health_message(cluster)
        return data
