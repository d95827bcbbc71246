"""Planner speed and quality on large synthetic clusters, against the naive first-fit baseline.

    python benchmarks/compaction_planner.py [--nodes 1000] [--replicas 10000] [--seed 1]

Target: 1,000 nodes and 10,000 replicas planned in under a second on this machine.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.compaction.planner import naive_plan, parse, plan, validate  # noqa: E402


def synthetic_state(nodes: int, replicas: int, seed: int, fill: float = 0.45) -> dict:
    """Nodes of 8 GPUs in two pools; replicas of 0.25-2 GPUs spread evenly, as Ray's default placement leaves them."""
    rng = random.Random(seed)
    ns = [{"id": "head", "head": True, "pool": "", "resources": {"CPU": 8}}]
    for i in range(nodes - 1):
        ns.append(
            {
                "id": f"n{i:04d}",
                "pool": "a100" if i % 2 else "h100",
                "resources": {"GPU": 8, "CPU": 32},
                "labels": {"pool": "a100" if i % 2 else "h100"},
                "cost": 1.0 if i % 2 else 2.0,
            }
        )
    free = {n["id"]: dict(n["resources"]) for n in ns[1:]}
    reps = []
    sizes = [0.25, 0.25, 0.25, 0.5, 0.5]
    order = [n["id"] for n in ns[1:]]
    k = 0
    budget = fill * 8 * (nodes - 1)
    used = 0.0
    while len(reps) < replicas and used < budget:
        size = rng.choice(sizes)
        node = order[k % len(order)]
        k += 1
        if free[node]["GPU"] >= size and free[node]["CPU"] >= 1:
            free[node]["GPU"] -= size
            free[node]["CPU"] -= 1
            used += size
            reps.append(
                {
                    "id": f"r{len(reps):05d}",
                    "node": node,
                    "app": f"app{rng.randrange(300)}",
                    "deployment": "d",
                    "team": f"t{rng.randrange(60)}",
                    "resources": {"GPU": size, "CPU": 1},
                }
            )
    return {"nodes": ns, "replicas": reps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--replicas", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    state = synthetic_state(args.nodes, args.replicas, args.seed)
    t0 = time.perf_counter()
    result = plan(state)
    planner_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    nodes, replicas = parse(state)
    naive = naive_plan(nodes, replicas)
    naive_s = time.perf_counter() - t0
    problems = validate(state, result)
    print(f"cluster: {len(state['nodes'])} nodes, {len(state['replicas'])} replicas")
    print(
        f"planner : {planner_s:6.3f} s, {len(result['nodes_to_drain']):4d} nodes freed, "
        f"{len(result['moves']):5d} moves, "
        f"strategy {result['strategy']}, valid: {not problems}"
    )
    print(
        f"naive   : {naive_s:6.3f} s, {len(naive.nodes_to_drain):4d} nodes freed, "
        f"{len(naive.moves):5d} moves (first-fit baseline)"
    )
    print(f"target  : under 1 s -> {'met' if planner_s < 1 else 'MISSED'}")
    if problems:
        print("violations:", problems[:5])
        sys.exit(1)


if __name__ == "__main__":
    main()
