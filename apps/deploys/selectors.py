"""Reads about what runs where: nodes, their capacity and use, and the replicas on each, as last observed."""

from __future__ import annotations

from decimal import Decimal

from apps.applications.selectors import placed_replicas
from apps.clusters.models import Cluster
from apps.servespec.spec import to_decimal


def cluster_state(cluster: Cluster) -> dict:
    """Nodes (capacity and what replicas use) and the replicas on each, from the last observation."""
    pools = list(cluster.pools.all())
    nodes: dict[str, dict] = {}
    for node in cluster.nodes or []:
        labels = node.get("labels") or {}
        nodes[node["node_id"]] = {
            "id": node["node_id"],
            "ip": node.get("node_ip", ""),
            "is_head": bool(node.get("is_head_node")),
            "state": node.get("state", ""),
            "pool": labels.get("pool", ""),
            "labels": labels,
            "capacity": {
                k: str(to_decimal(v))
                for k, v in (node.get("resources_total") or {}).items()
                if not k.startswith("node:")
            },
            "used": {},
            "replicas": [],
        }
    # Only apps Ray reported on: a cluster with thousands of registered apps renders as fast as its placement.
    # Sums are kept as Decimals and written once; a deployment's resources are converted once, not per replica.
    used: dict[str, dict[str, Decimal]] = {}
    converted: dict[int, tuple[dict[str, Decimal], dict[str, str]]] = {}
    for rep in placed_replicas(cluster):
        node_id = rep.node_id
        node = nodes.get(node_id)
        if node is None:
            node = nodes[node_id] = {
                "id": node_id,
                "ip": rep.replica.get("node_ip", ""),
                "is_head": False,
                "state": "",
                "pool": "",
                "labels": {},
                "capacity": {},
                "used": {},
                "replicas": [],
            }
        both = converted.get(id(rep.resources))
        if both is None:  # one deployment's replicas share one dict (read-only)
            per = {k: to_decimal(v) for k, v in rep.resources.items()}
            both = converted[id(rep.resources)] = (per, {k: str(v) for k, v in per.items()})
        per, shown = both
        node["replicas"].append(
            {
                "replica": rep.replica.get("replica_id", ""),
                "app": rep.app.serve_name,
                "application_id": rep.app.pk,
                "deployment": rep.deployment,
                "team": rep.app.team.slug,
                "state": rep.replica.get("state", ""),
                "resources": shown,
            }
        )
        sums = used.setdefault(node_id, {})
        for k, v in per.items():
            sums[k] = sums.get(k, Decimal(0)) + v
    for node_id, sums in used.items():
        nodes[node_id]["used"] = {k: str(v) for k, v in sums.items()}
    return {
        "cluster": cluster.pk,
        "observed_at": cluster.last_seen_at.isoformat() if cluster.last_seen_at else None,
        "pools": [{"name": p.name, "resource": p.resource, "capacity": str(p.capacity)} for p in pools],
        "nodes": sorted(nodes.values(), key=lambda n: (not n["is_head"], n["ip"], n["id"])),
        "total_gpus": str(sum((to_decimal(n["capacity"].get("GPU", 0)) for n in nodes.values()), Decimal(0))),
    }
