"""Reads about what runs where: nodes, their capacity and use, and the replicas on each, as last observed."""

from __future__ import annotations

from decimal import Decimal

from apps.applications.models import Application
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
    apps = (
        Application.objects.filter(cluster=cluster, deleted_at__isnull=True)
        .exclude(status={})
        .select_related("team")
        .only("id", "name", "status", "team__slug")
    )
    for app in apps:
        for dep_name, dep in (app.status.get("deployments") or {}).items():
            resources = dep.get("required_resources") or {}
            for rep in dep.get("replicas") or []:
                node = nodes.setdefault(
                    rep.get("node_id", ""),
                    {
                        "id": rep.get("node_id", ""),
                        "ip": rep.get("node_ip", ""),
                        "is_head": False,
                        "state": "",
                        "pool": "",
                        "labels": {},
                        "capacity": {},
                        "used": {},
                        "replicas": [],
                    },
                )
                node["replicas"].append(
                    {
                        "replica": rep.get("replica_id", ""),
                        "app": app.serve_name,
                        "application_id": app.pk,
                        "deployment": dep_name,
                        "team": app.team.slug,
                        "state": rep.get("state", ""),
                        "resources": {k: str(to_decimal(v)) for k, v in resources.items()},
                    }
                )
                for k, v in resources.items():
                    node["used"][k] = str(to_decimal(node["used"].get(k, "0")) + to_decimal(v))
    return {
        "cluster": cluster.pk,
        "observed_at": cluster.last_seen_at.isoformat() if cluster.last_seen_at else None,
        "pools": [{"name": p.name, "resource": p.resource, "capacity": str(p.capacity)} for p in pools],
        "nodes": sorted(nodes.values(), key=lambda n: (not n["is_head"], n["ip"], n["id"])),
        "total_gpus": str(sum((to_decimal(n["capacity"].get("GPU", 0)) for n in nodes.values()), Decimal(0))),
    }
