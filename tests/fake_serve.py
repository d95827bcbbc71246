"""A stand-in for the dashboard client of a cluster whose nodes Serve moves replicas between, for compaction
tests whose subject is the control plane's bookkeeping, not Ray (tests/e2e/test_compaction_ray.py has Ray).

It answers what ``RayDashboardClient`` answers (Serve's status, the node list) and drains nodes the way Ray
2.60 does to Serve's replicas (measured on the local cluster): a replica on a draining node turns
PENDING_MIGRATION, a replacement starts (STARTING, no node until it is scheduled) on a node that is not draining
and has room, and once the replacement runs, the old replica goes. Each GET is one tick of Serve's loop.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeReplica:
    id: str
    app: str
    deployment: str
    node: str
    gpus: float
    state: str = "RUNNING"
    replaces: str = ""


@dataclass
class FakeServe:
    nodes: dict[str, float]  # worker node id -> GPUs (a head node "head" with no GPU is added)
    replicas: list[FakeReplica] = field(default_factory=list)
    placement: str = "spread"  # where replacements go: spread (emptiest node), pack (fullest that fits)
    draining: set[str] = field(default_factory=set)
    late: dict[str, int] = field(default_factory=dict)  # node -> ticks before its drain takes effect
    unreachable: bool = False
    ticks: int = 0
    drain_calls: list[list[str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(100))

    # -- the client's interface ---------------------------------------------------------------------------------

    def get_serve_applications(self) -> dict:
        from workers.clients.ray_dashboard import RayUnavailable

        if self.unreachable:
            raise RayUnavailable("Cannot reach the Ray dashboard at http://fake: connection refused")
        self.tick()
        return {"applications": self.document()}

    def list_nodes(self) -> list[dict]:
        nodes = [
            {
                "node_id": "head",
                "node_ip": "10.0.0.1",
                "state": "ALIVE",
                "is_head_node": True,
                "resources_total": {"CPU": 1.0},
                "labels": {},
            }
        ]
        for i, (node_id, gpus) in enumerate(sorted(self.nodes.items())):
            nodes.append(
                {
                    "node_id": node_id,
                    "node_ip": f"10.0.0.{i + 2}",
                    "state": "ALIVE",
                    "is_head_node": False,
                    "resources_total": {"CPU": 4.0, "GPU": float(gpus), "memory": 1e9},
                    "labels": {"pool": "a100"},
                }
            )
        return nodes

    def drain(self, node_ids: list[str]) -> None:
        self.drain_calls.append(list(node_ids))
        for node_id in node_ids:
            if node_id in self.late:
                continue
            self.draining.add(node_id)

    # -- what Serve does ----------------------------------------------------------------------------------------

    def add(self, app: str, deployment: str, gpus: float, nodes: list[str]) -> None:
        for node in nodes:
            self.replicas.append(FakeReplica(f"{app}-{next(self._ids)}", app, deployment, node, gpus))

    def free(self, node: str) -> float:
        used = sum(r.gpus for r in self.replicas if r.node == node)
        return self.nodes[node] - used

    def _target(self, gpus: float) -> str:
        fits = [n for n in self.nodes if n not in self.draining and self.free(n) + 1e-9 >= gpus]
        if not fits:
            return ""
        if self.placement == "pack":
            return min(fits, key=lambda n: (self.free(n), n))
        return max(fits, key=lambda n: (self.free(n), n))

    def tick(self) -> None:
        self.ticks += 1
        for node, wait in list(self.late.items()):
            if self.drain_calls and wait <= 1:
                del self.late[node]
                self.draining.add(node)
            elif self.drain_calls:
                self.late[node] = wait - 1
        for rep in list(self.replicas):
            if rep.state == "RUNNING" and rep.node in self.draining:
                rep.state = "PENDING_MIGRATION"
                self.replicas.append(
                    FakeReplica(
                        f"{rep.app}-{next(self._ids)}", rep.app, rep.deployment, "", rep.gpus, "STARTING", rep.id
                    )
                )
            elif rep.state == "STARTING" and not rep.node:
                rep.node = self._target(rep.gpus)
            elif rep.state == "STARTING":
                rep.state = "RUNNING"
            elif rep.state == "PENDING_MIGRATION":
                replacement = next((r for r in self.replicas if r.replaces == rep.id), None)
                if replacement and replacement.state == "RUNNING":
                    self.replicas.remove(rep)

    def document(self) -> dict:
        apps: dict[str, dict] = {}
        for rep in self.replicas:
            app = apps.setdefault(rep.app, {"status": "RUNNING", "deployments": {}})
            dep = app["deployments"].setdefault(
                rep.deployment,
                {"status": "HEALTHY", "required_resources": {"CPU": 0.1, "GPU": rep.gpus}, "replicas": []},
            )
            entry = {"replica_id": rep.id, "state": rep.state, "actor_id": f"actor-{rep.id}"}
            if rep.node:
                entry["node_id"] = rep.node
            dep["replicas"].append(entry)
        for app in apps.values():
            for dep in app["deployments"].values():
                dep["target_num_replicas"] = sum(1 for r in dep["replicas"] if r["state"] != "PENDING_MIGRATION")
        return apps
