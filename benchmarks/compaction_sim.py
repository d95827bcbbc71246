"""Replay traffic traces through a simulated cluster and compare placement and compaction policies.

    python benchmarks/compaction_sim.py [--days 3] [--every 5] [--idle 5]

Each minute: Serve-like autoscaling sets each deployment's replica count (up at once, down after a
10-minute delay); new replicas are placed by policy (spread: the emptiest node that fits, as Ray's default;
pack: the fullest); an autoscaler adds an 8-GPU node when a replica fits nowhere and removes nodes idle for
--idle minutes; with compaction, this repository's planner runs every --every minutes and its moves are
applied. Reported: node-hours and idle GPU-hours per policy, and the lower bound (each minute, the fewest
nodes that could hold the demand: ceil(GPUs demanded / 8)).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from traces import TRACES, Deployment  # noqa: E402

from apps.compaction.planner import Node, Replica, plan_objects  # noqa: E402

NODE_GPUS = 8.0
DOWNSCALE_DELAY = 10


@dataclass
class SimNode:
    id: str
    free: float = NODE_GPUS
    replicas: dict[str, tuple[str, float]] = field(default_factory=dict)  # replica id -> (deployment, gpus)
    idle_since: int | None = 0
    cordoned: bool = False  # drained: Ray schedules nothing new there, the autoscaler removes it when idle


class Sim:
    def __init__(self, deployments: list[Deployment], policy: str, compact_every: int, idle_timeout: int) -> None:
        self.deps = deployments
        self.policy = policy
        self.compact_every = compact_every
        self.idle_timeout = idle_timeout
        self.nodes: dict[str, SimNode] = {}
        self.where: dict[str, dict[str, str]] = {d.name: {} for d in deployments}  # deployment -> replica -> node
        self.low_since: dict[str, int | None] = {d.name: None for d in deployments}
        self.counter = 0
        self.node_minutes = 0.0
        self.idle_gpu_minutes = 0.0
        self.moves = 0

    def _new_node(self, t: int) -> SimNode:
        self.counter += 1
        node = SimNode(f"n{self.counter:05d}", idle_since=t)
        self.nodes[node.id] = node
        return node

    def _place(self, dep: Deployment, t: int) -> None:
        fitting = [n for n in self.nodes.values() if not n.cordoned and n.free + 1e-9 >= dep.gpus]
        if not fitting:
            node = self._new_node(t)
        elif self.policy == "spread":
            node = max(fitting, key=lambda n: (n.free, n.id))
        else:
            node = min(fitting, key=lambda n: (n.free, n.id))
        self.counter += 1
        rid = f"r{self.counter}"
        node.replicas[rid] = (dep.name, dep.gpus)
        node.free -= dep.gpus
        node.idle_since = None
        self.where[dep.name][rid] = node.id

    def _remove(self, dep: Deployment, t: int) -> None:
        reps = self.where[dep.name]
        if self.policy == "spread":
            rid = max(reps, key=lambda r: int(r[1:]))  # the newest replica
        else:  # Serve stops replicas on the nodes with the fewest replicas first
            rid = min(reps, key=lambda r: (len(self.nodes[reps[r]].replicas), reps[r], r))
        node = self.nodes[reps.pop(rid)]
        node.free += node.replicas.pop(rid)[1]
        if not node.replicas:
            node.idle_since = t

    def _compact(self, t: int) -> None:
        nodes = [Node(id=n.id, resources={"GPU": NODE_GPUS}, pool="gpu") for n in self.nodes.values() if not n.cordoned]
        replicas = [
            Replica(id=rid, node=n.id, resources={"GPU": g}, app=dep, deployment="d")
            for n in self.nodes.values()
            for rid, (dep, g) in n.replicas.items()
        ]
        result = plan_objects(nodes, replicas)
        for move in result.moves:
            src, dst = self.nodes[move["from"]], self.nodes[move["to"]]
            dep, gpus = src.replicas.pop(move["replica"])
            src.free += gpus
            dst.replicas[move["replica"]] = (dep, gpus)
            dst.free -= gpus
            dst.idle_since = None
            self.where[dep][move["replica"]] = dst.id
        for node_id in result.nodes_to_drain:
            self.nodes[node_id].idle_since = t
            self.nodes[node_id].cordoned = True
        self.moves += len(result.moves)

    def step(self, t: int) -> float:
        demand = 0.0
        for dep in self.deps:
            want = min(dep.max_replicas, max(dep.min_replicas, math.ceil(dep.load[t] / dep.capacity)))
            have = len(self.where[dep.name])
            if want > have:
                self.low_since[dep.name] = None
                for _ in range(want - have):
                    self._place(dep, t)
            elif want < have:
                since = self.low_since[dep.name]
                if since is None:
                    self.low_since[dep.name] = t
                elif t - since >= DOWNSCALE_DELAY:
                    for _ in range(have - want):
                        self._remove(dep, t)
                    self.low_since[dep.name] = None
            else:
                self.low_since[dep.name] = None
            demand += len(self.where[dep.name]) * dep.gpus
        if self.compact_every and t % self.compact_every == 0:
            self._compact(t)
        for node_id in [
            n.id for n in self.nodes.values() if n.idle_since is not None and t - n.idle_since >= self.idle_timeout
        ]:
            del self.nodes[node_id]
        self.node_minutes += len(self.nodes)
        self.idle_gpu_minutes += sum(n.free for n in self.nodes.values())
        return demand


def run(trace: str, days: int, every: int, idle: int) -> list[tuple[str, float, float, int]]:
    deps = TRACES[trace](days=days)
    steps = days * 24 * 60
    rows = []
    lower = 0.0
    for name, policy, compact in (
        ("spread (Ray default)", "spread", 0),
        ("pack, no compaction", "pack", 0),
        (f"pack + compaction every {every} min", "pack", every),
    ):
        sim = Sim(deps, policy, compact, idle)
        lb = 0.0
        for t in range(steps):
            demand = sim.step(t)
            lb += math.ceil(demand / NODE_GPUS - 1e-9)
        lower = lb
        rows.append((name, sim.node_minutes / 60, sim.idle_gpu_minutes / 60, sim.moves))
    rows.append(("lower bound ceil(demand / 8)", lower / 60, 0.0, 0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--every", type=int, default=2, help="compaction interval (minutes)")
    parser.add_argument("--idle", type=int, default=2, help="autoscaler idle timeout (minutes; KubeRay's default is 1)")
    parser.add_argument("--trace", choices=sorted(TRACES), action="append")
    args = parser.parse_args()
    print(f"{args.days} days at 1-minute steps, 8-GPU nodes, idle timeout {args.idle} min, ", end="")
    print(f"downscale delay {DOWNSCALE_DELAY} min, compaction every {args.every} min")
    for trace in args.trace or list(TRACES):
        started = time.perf_counter()
        rows = run(trace, args.days, args.every, args.idle)
        bound = rows[-1][1]
        print(f"\n{trace} ({time.perf_counter() - started:.1f} s to simulate)")
        print(f"  {'policy':38s} {'node-hours':>11s} {'vs bound':>9s} {'idle GPU-h':>11s} {'moves':>7s}")
        for name, node_h, idle_h, moves in rows:
            print(f"  {name:38s} {node_h:11.1f} {100 * (node_h / bound - 1):+8.1f}% {idle_h:11.1f} {moves:7d}")


if __name__ == "__main__":
    main()
