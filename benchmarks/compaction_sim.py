"""Replay traffic traces through a simulated Ray cluster and compare placement and compaction policies.

    python benchmarks/compaction_sim.py [--days 3] [--every 5] [--idle 2] [--migrate 1]

The simulation models what Ray and Serve do (Ray 2.60, read from Serve's deployment scheduler and measured on
the local cluster), not the planner's intentions:

- each minute, Serve-like autoscaling sets each deployment's replica count (up at once, down after a 10-minute
  delay);
- new replicas, and the replacements of replicas on a draining node, are placed as Serve places them: spread
  (Ray's default: the node with the most room) or pack (RAY_SERVE_USE_PACK_SCHEDULING_STRATEGY=1: best fit among
  nodes that hold replicas, then an empty node); a draining node takes none; when nothing fits, the autoscaler
  adds an 8-GPU node;
- a downscale stops replicas on the nodes with the fewest replicas first, newest first (Serve's rule in both
  modes);
- compaction runs this repository's planner every --every minutes (never while a migration is under way, as the
  control plane waits for Serve), marks all the plan's nodes as draining together, and Serve moves each replica:
  the replacement starts where Serve's placement puts it (not necessarily where the plan said) and the old
  replica holds its GPUs --migrate minutes more (start-then-stop);
- the autoscaler removes a node --idle minutes after it became empty.

Reported: node-hours and idle GPU-hours per policy; replicas moved; replacements that landed elsewhere than
planned; and the lower bound (each minute, the fewest nodes that could hold the demand: ceil(GPUs / 8)). A last
row applies the planner's moves exactly, as the earlier model did, to show what Ray's behaviour costs.
"""

from __future__ import annotations

import argparse
import itertools
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
EPS = 1e-9


@dataclass
class SimReplica:
    id: int
    dep: str
    gpus: float
    node: str
    leaving_at: int | None = None  # migrating off a draining node: stops once its replacement has started


@dataclass
class SimNode:
    id: str
    replicas: set[int] = field(default_factory=set)
    idle_since: int | None = 0
    draining: bool = False


class Sim:
    def __init__(
        self,
        deployments: list[Deployment],
        policy: str,
        compact_every: int,
        idle_timeout: int,
        migrate: int = 1,
        exact: bool = False,
    ) -> None:
        self.deps = deployments
        self.policy = policy
        self.compact_every = compact_every
        self.idle_timeout = idle_timeout
        self.migrate = migrate
        self.exact = exact
        self.nodes: dict[str, SimNode] = {}
        self.reps: dict[int, SimReplica] = {}
        self.live: dict[str, set[int]] = {d.name: set() for d in deployments}
        self.low_since: dict[str, int | None] = {d.name: None for d in deployments}
        self.ids = itertools.count(1)
        self.node_ids = itertools.count(1)
        self.node_minutes = 0.0
        self.idle_gpu_minutes = 0.0
        self.moves = 0
        self.elsewhere = 0  # replacements Serve put on another node than the plan's

    def free(self, node: SimNode) -> float:
        return NODE_GPUS - sum(self.reps[r].gpus for r in node.replicas)

    def _new_node(self, t: int) -> SimNode:
        node = SimNode(f"n{next(self.node_ids):05d}", idle_since=t)
        self.nodes[node.id] = node
        return node

    def _target(self, gpus: float, t: int) -> SimNode:
        fitting = [n for n in self.nodes.values() if not n.draining and self.free(n) + EPS >= gpus]
        if not fitting:
            return self._new_node(t)  # the autoscaler adds a node for the pending replica
        if self.policy == "spread":
            return max(fitting, key=lambda n: (self.free(n), n.id))
        busy = [n for n in fitting if n.replicas]  # Serve's pack: best fit on nodes in use, then an empty one
        return min(busy or fitting, key=lambda n: (self.free(n), n.id))

    def _start(self, dep: str, gpus: float, node: SimNode) -> int:
        rid = next(self.ids)
        self.reps[rid] = SimReplica(rid, dep, gpus, node.id)
        node.replicas.add(rid)
        node.idle_since = None
        self.live[dep].add(rid)
        return rid

    def _stop(self, rid: int, t: int) -> None:
        rep = self.reps.pop(rid)
        node = self.nodes[rep.node]
        node.replicas.discard(rid)
        self.live[rep.dep].discard(rid)
        if not node.replicas:
            node.idle_since = t

    def _downscale(self, dep: Deployment, t: int) -> None:
        # Fewest replicas on the node first, then the newest replica.
        rid = min(self.live[dep.name], key=lambda r: (len(self.nodes[self.reps[r].node].replicas), -r))
        self._stop(rid, t)

    def _compact(self, t: int) -> None:
        if any(rep.leaving_at is not None for rep in self.reps.values()):
            return  # a migration is under way: wait for it, as execution waits for Serve
        open_nodes = [n for n in self.nodes.values() if not n.draining]
        result = plan_objects(
            [Node(id=n.id, resources={"GPU": NODE_GPUS}, pool="gpu") for n in open_nodes],
            [
                Replica(id=str(rid), node=n.id, resources={"GPU": self.reps[rid].gpus}, app=self.reps[rid].dep)
                for n in open_nodes
                for rid in n.replicas
            ],
        )
        planned = {int(m["replica"]): m["to"] for m in result.moves}
        for node_id in result.nodes_to_drain:  # all together: none of them takes a replacement
            self.nodes[node_id].draining = True
        for node_id in result.nodes_to_drain:
            node = self.nodes[node_id]
            for rid in sorted(node.replicas, key=lambda r: -self.reps[r].gpus):
                rep = self.reps[rid]
                if self.exact:  # the earlier model: the plan's move, applied as planned and at once
                    node.replicas.discard(rid)
                    rep.node = planned[rid]
                    self.nodes[rep.node].replicas.add(rid)
                    self.nodes[rep.node].idle_since = None
                else:
                    target = self._target(rep.gpus, t)
                    self.elsewhere += target.id != planned.get(rid)
                    self.live[rep.dep].discard(rid)
                    rep.leaving_at = t + self.migrate
                    self._start(rep.dep, rep.gpus, target)
                self.moves += 1
            if not node.replicas:
                node.idle_since = t

    def step(self, t: int) -> float:
        for rid in [r.id for r in self.reps.values() if r.leaving_at is not None and r.leaving_at <= t]:
            self.reps[rid].leaving_at = None
            self.live[self.reps[rid].dep].add(rid)  # _stop removes it from live again
            self._stop(rid, t)
        demand = 0.0
        for dep in self.deps:
            want = min(dep.max_replicas, max(dep.min_replicas, math.ceil(dep.load[t] / dep.capacity)))
            have = len(self.live[dep.name])
            if want > have:
                self.low_since[dep.name] = None
                for _ in range(want - have):
                    self._start(dep.name, dep.gpus, self._target(dep.gpus, t))
            elif want < have:
                since = self.low_since[dep.name]
                if since is None:
                    self.low_since[dep.name] = t
                elif t - since >= DOWNSCALE_DELAY:
                    for _ in range(have - want):
                        self._downscale(dep, t)
                    self.low_since[dep.name] = None
            else:
                self.low_since[dep.name] = None
            demand += len(self.live[dep.name]) * dep.gpus
        if self.compact_every and t % self.compact_every == 0:
            self._compact(t)
        for node_id in [
            n.id for n in self.nodes.values() if n.idle_since is not None and t - n.idle_since >= self.idle_timeout
        ]:
            del self.nodes[node_id]
        self.node_minutes += len(self.nodes)
        self.idle_gpu_minutes += sum(self.free(n) for n in self.nodes.values())
        return demand


def run(trace: str, days: int, every: int, idle: int, migrate: int) -> list[tuple[str, float, float, int, int]]:
    deps = TRACES[trace](days=days)
    steps = days * 24 * 60
    rows = []
    lower = 0.0
    for name, policy, compact, exact in (
        ("spread (Ray default)", "spread", 0, False),
        ("pack, no compaction", "pack", 0, False),
        (f"spread + compaction every {every} min", "spread", every, False),
        (f"pack + compaction every {every} min", "pack", every, False),
        (f"(moves applied exactly, every {every} min)", "pack", every, True),
    ):
        sim = Sim(deps, policy, compact, idle, migrate=migrate, exact=exact)
        lb = 0.0
        for t in range(steps):
            demand = sim.step(t)
            lb += math.ceil(demand / NODE_GPUS - 1e-9)
        lower = lb
        rows.append((name, sim.node_minutes / 60, sim.idle_gpu_minutes / 60, sim.moves, sim.elsewhere))
    rows.append(("lower bound ceil(demand / 8)", lower / 60, 0.0, 0, 0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=3)
    parser.add_argument("--every", type=int, default=5, help="compaction interval (minutes)")
    parser.add_argument("--idle", type=int, default=2, help="autoscaler idle timeout (minutes; KubeRay's default is 1)")
    parser.add_argument("--migrate", type=int, default=1, help="minutes a moved replica's old copy keeps its GPUs")
    parser.add_argument("--trace", choices=sorted(TRACES), action="append")
    args = parser.parse_args()
    print(f"{args.days} days at 1-minute steps, 8-GPU nodes, idle timeout {args.idle} min, ", end="")
    print(f"downscale delay {DOWNSCALE_DELAY} min, compaction every {args.every} min, migration {args.migrate} min")
    for trace in args.trace or list(TRACES):
        started = time.perf_counter()
        rows = run(trace, args.days, args.every, args.idle, args.migrate)
        bound = rows[-1][1]
        print(f"\n{trace} ({time.perf_counter() - started:.1f} s to simulate)")
        print(
            f"  {'policy':42s} {'node-hours':>11s} {'vs bound':>9s} {'idle GPU-h':>11s} {'moves':>7s} "
            f"{'elsewhere':>10s}"
        )
        for name, node_h, idle_h, moves, elsewhere in rows:
            print(
                f"  {name:42s} {node_h:11.1f} {100 * (node_h / bound - 1):+8.1f}% {idle_h:11.1f} {moves:7d} "
                f"{elsewhere:10d}"
            )


if __name__ == "__main__":
    main()
