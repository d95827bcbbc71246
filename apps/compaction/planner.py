"""Replica compaction planner: a pure function from cluster state to a plan. No Django, no Ray.

Input (the same JSON shape as ``manage.py compaction_plan --input``)::

    {"nodes": [{"id", "resources": {"GPU": 4, "CPU": 8, ...}, "head": false, "pool": "a100",
                "labels": {...}, "cost": 1.0}],
     "replicas": [{"id", "node", "app", "deployment", "team", "resources": {"GPU": 0.5, ...},
                   "label_selector": {...}}]}

Where Ray reads the GPUs (NVML), a node may give ``gpu_cards`` (each card's memory in MiB) and a replica
``gpu_memory_mib`` (what its process holds) and ``card`` (the card's index): a plan then never puts fractional
replicas on one card unless both their num_gpus and the memory they really hold fit it (num_gpus is only a
scheduling label; a move says which ``card``). Without them, GPUs are counted by num_gpus alone.

Output: nodes to drain, moves (replica, from, to) and the resources freed. A plan is valid when every move
fits (every resource of every node, after all moves), the head node is never drained, every drained node
ends empty, and every replica lands on a node of its own pool (or one matching its label selector).

Objective, in order: free as many nodes as possible (weighted by node cost; a node that was empty and receives
replicas counts against the plan, as it was free already), then make as few moves as possible, then keep each
deployment with two or more replicas on at least two nodes. Deterministic: the same input gives the same plan.
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

EPS = 1e-9
# Up to this many nodes x replicas, the plain first-fit plan is computed too and kept if it is better.
NAIVE_CANDIDATE_LIMIT = 200_000


@dataclass
class Node:
    id: str
    resources: dict[str, float]
    head: bool = False
    pool: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cost: float = 1.0
    cards: list[float] = field(default_factory=list)  # memory (MiB) of each GPU card, where Ray reads them (NVML)


@dataclass
class Replica:
    id: str
    node: str
    resources: dict[str, float]
    app: str = ""
    deployment: str = ""
    team: str = ""
    label_selector: dict[str, str] = field(default_factory=dict)
    gpu_memory_mib: float | None = None  # what its process really holds on its card (NVML), where known
    card: int | None = None  # the card it is on, where known

    @property
    def group(self) -> tuple[str, str]:
        return (self.app, self.deployment)

    def card_need(self) -> tuple[float, float] | None:
        """What this replica takes of the one card it shares: its fractional num_gpus (what Ray schedules by) and
        the memory its process really holds (which num_gpus does not limit). None for no or whole cards."""
        gpus = self.resources.get("GPU", 0.0)
        if not 0 < gpus < 1:
            return None
        return gpus, self.gpu_memory_mib or 0.0


@dataclass
class Plan:
    nodes_to_drain: list[str]
    moves: list[dict[str, str]]
    freed: dict[str, float]
    idle_nodes: list[str] = field(default_factory=list)
    strategy: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes_to_drain": self.nodes_to_drain,
            "moves": self.moves,
            "freed": {k: _num(v) for k, v in sorted(self.freed.items())},
            "idle_nodes": self.idle_nodes,
            "strategy": self.strategy,
        }


def _num(value: float) -> float | int:
    rounded = round(value, 6)
    return int(rounded) if rounded == int(rounded) else rounded


def _float(value: Any) -> float:
    return float(Decimal(str(value)))


def parse(state: dict[str, Any]) -> tuple[list[Node], list[Replica]]:
    """Read the JSON shape above; raises ValueError naming what is wrong."""
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("nodes"), list)
        or not isinstance(state.get("replicas"), list)
    ):
        raise ValueError('input must be {"nodes": [...], "replicas": [...]}')
    nodes, seen = [], set()
    for i, raw in enumerate(state["nodes"]):
        try:
            node = Node(
                id=str(raw["id"]),
                resources={str(k): _float(v) for k, v in (raw.get("resources") or {}).items()},
                head=bool(raw.get("head", False)),
                pool=str(raw.get("pool") or ""),
                labels={str(k): str(v) for k, v in (raw.get("labels") or {}).items()},
                cost=_float(raw.get("cost", 1)),
                cards=[_float(c) for c in raw.get("gpu_cards") or []],
            )
        except (KeyError, TypeError, ArithmeticError, ValueError) as exc:
            raise ValueError(f"nodes[{i}]: {exc}") from exc
        if node.id in seen:
            raise ValueError(f"nodes[{i}]: duplicate node id {node.id!r}")
        seen.add(node.id)
        nodes.append(node)
    replicas, rseen = [], set()
    for i, raw in enumerate(state["replicas"]):
        try:
            rep = Replica(
                id=str(raw["id"]),
                node=str(raw["node"]),
                resources={str(k): _float(v) for k, v in (raw.get("resources") or {}).items()},
                app=str(raw.get("app", "")),
                deployment=str(raw.get("deployment", "")),
                team=str(raw.get("team", "")),
                label_selector={str(k): str(v) for k, v in (raw.get("label_selector") or {}).items()},
                gpu_memory_mib=_float(raw["gpu_memory_mib"]) if raw.get("gpu_memory_mib") is not None else None,
                card=int(raw["card"]) if raw.get("card") is not None else None,
            )
        except (KeyError, TypeError, ArithmeticError, ValueError) as exc:
            raise ValueError(f"replicas[{i}]: {exc}") from exc
        if rep.node not in seen:
            raise ValueError(f"replicas[{i}]: node {rep.node!r} is not in nodes")
        if rep.id in rseen:
            raise ValueError(f"replicas[{i}]: duplicate replica id {rep.id!r}")
        rseen.add(rep.id)
        replicas.append(rep)
    return nodes, replicas


def _eligible(rep: Replica, home: Node, target: Node) -> bool:
    if rep.label_selector:
        return all(target.labels.get(k) == v for k, v in rep.label_selector.items())
    return target.pool == home.pool


class _State:
    """Free resources per node, with per-pool sorted indexes on free GPU and CPU for best-fit search."""

    def __init__(self, nodes: list[Node], replicas: list[Replica]) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.free: dict[str, dict[str, float]] = {n.id: dict(n.resources) for n in nodes}
        self.on_node: dict[str, list[Replica]] = defaultdict(list)
        self.group_nodes: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        self.group_size: dict[tuple[str, str], int] = defaultdict(int)
        for rep in replicas:
            self.on_node[rep.node].append(rep)
            group = self.group_nodes[rep.group]
            group[rep.node] = group.get(rep.node, 0) + 1
            self.group_size[rep.group] += 1
            for k, v in rep.resources.items():
                self.free[rep.node][k] = self.free[rep.node].get(k, 0.0) - v
        # Where Ray reads the cards: each card's free share, counting each fractional replica by what it really
        # takes (card_need), so that no plan puts replicas whose real memory does not fit one card on it.
        self.cards: dict[str, list[list[float]]] = {n.id: [[1.0, mib] for mib in n.cards] for n in nodes if n.cards}
        self.card_of: dict[str, int] = {}
        for rep in replicas:
            if rep.node in self.cards and rep.card_need() is not None:
                known = rep.card is not None and 0 <= rep.card < len(self.cards[rep.node])
                self._take(rep, rep.node, rep.card if known else self._card_for(rep, rep.node, strict=False))
        self.hidden: set[str] = set()
        self.index: dict[tuple[str, str], list[tuple[float, str]]] = {}
        for node in nodes:
            for key in ("GPU", "CPU"):
                self.index.setdefault((node.pool, key), [])
                bisect.insort(self.index[(node.pool, key)], (self.free[node.id].get(key, 0.0), node.id))

        self.hidden: set[str] = set()

    def _card_for(self, rep: Replica, node_id: str, strict: bool = True) -> int | None:
        """The card of node_id that rep fits best (least memory left after it; its share of the card and its
        memory both fit); with strict=False, the roomiest whatever fits."""
        gpus, mib = rep.card_need() or (0.0, 0.0)
        best: tuple[float, int] | None = None
        for i, (free_share, free_mib) in enumerate(self.cards[node_id]):
            if strict and (free_share - gpus < -EPS or free_mib - mib < -EPS):
                continue
            key = (free_mib - mib if strict else mib - free_mib, i)
            if best is None or key < best:
                best = key
        return best[1] if best else None

    def _take(self, rep: Replica, node_id: str, card: int | None) -> None:
        need = rep.card_need()
        if card is not None and need is not None:
            self.cards[node_id][card][0] -= need[0]
            self.cards[node_id][card][1] -= need[1]
            self.card_of[rep.id] = card

    def _release(self, rep: Replica, node_id: str) -> None:
        card, need = self.card_of.pop(rep.id, None), rep.card_need()
        if card is not None and need is not None and node_id in self.cards:
            self.cards[node_id][card][0] += need[0]
            self.cards[node_id][card][1] += need[1]

    def _unindex(self, node_id: str, free: dict[str, float]) -> None:
        pool = self.nodes[node_id].pool
        for key in ("GPU", "CPU"):
            lst = self.index[(pool, key)]
            old = (free.get(key, 0.0), node_id)
            i = bisect.bisect_left(lst, old)
            if i < len(lst) and lst[i] == old:
                lst.pop(i)

    def _reindex(self, node_id: str, before: dict[str, float] | None) -> None:
        if node_id in self.hidden:
            return
        if before is not None:
            self._unindex(node_id, before)
        pool = self.nodes[node_id].pool
        for key in ("GPU", "CPU"):
            bisect.insort(self.index[(pool, key)], (self.free[node_id].get(key, 0.0), node_id))

    def hide(self, node_id: str) -> None:
        """Take a node out of the target search (it is being drained, or has been)."""
        if node_id not in self.hidden:
            self._unindex(node_id, self.free[node_id])
            self.hidden.add(node_id)

    def unhide(self, node_id: str) -> None:
        if node_id in self.hidden:
            self.hidden.discard(node_id)
            self._reindex(node_id, None)

    def place(self, rep: Replica, src: str, dst: str) -> None:
        self._release(rep, src)
        if dst in self.cards and rep.card_need() is not None:
            card = self._card_for(rep, dst)
            self._take(rep, dst, card if card is not None else self._card_for(rep, dst, strict=False))
        for node_id, sign in ((src, 1.0), (dst, -1.0)):
            before = {k: self.free[node_id].get(k, 0.0) for k in ("GPU", "CPU")}
            for k, v in rep.resources.items():
                self.free[node_id][k] = self.free[node_id].get(k, 0.0) + sign * v
            self._reindex(node_id, before)
        group = self.group_nodes[rep.group]
        group[src] -= 1
        if not group[src]:
            del group[src]
        group[dst] = group.get(dst, 0) + 1

    def fits(self, rep: Replica, node_id: str) -> bool:
        free = self.free[node_id]
        if not all(free.get(k, 0.0) + EPS >= v for k, v in rep.resources.items() if v > 0):
            return False
        if node_id in self.cards and rep.card_need() is not None:
            return self._card_for(rep, node_id) is not None
        return True

    def move(self, rep: Replica, src: str, dst: str) -> dict[str, Any]:
        """A move as the plan lists it: with the card it lands on, where the cards are known."""
        out: dict[str, Any] = {"replica": rep.id, "from": src, "to": dst}
        if rep.id in self.card_of and dst in self.cards:
            out["card"] = self.card_of[rep.id]
        return out

    def candidates(self, rep: Replica, home: Node) -> Iterator[str]:
        """Nodes where rep fits, tightest fit first on its main resource (GPU if it needs one, else CPU)."""
        key = "GPU" if rep.resources.get("GPU", 0) > 0 else "CPU"
        need = rep.resources.get(key, 0.0)
        pools = (
            sorted({n.pool for n in self.nodes.values() if _eligible(rep, home, n)})
            if rep.label_selector
            else [home.pool]
        )
        lists = [self.index.get((pool, key), []) for pool in pools]
        if len(lists) == 1:
            merged: Iterable[tuple[float, str]] = lists[0][bisect.bisect_left(lists[0], (need - EPS, "")) :]
        else:
            merged = heapq.merge(*(lst[bisect.bisect_left(lst, (need - EPS, "")) :] for lst in lists))
        for _, node_id in merged:
            if self.fits(rep, node_id) and (not rep.label_selector or _eligible(rep, home, self.nodes[node_id])):
                yield node_id


def _collapses(state: _State, rep: Replica, src: str, dst: str) -> bool:
    """Would moving rep leave its deployment (two or more replicas) on a single node?"""
    group = state.group_nodes[rep.group]
    if state.group_size[rep.group] < 2:
        return False
    distinct = len(group) - (1 if group.get(src, 0) == 1 else 0) + (0 if group.get(dst, 0) else 1)
    return distinct < 2


def _try_drain(state: _State, node: Node, closed: set[str], spread: bool) -> list[tuple[Replica, str]] | None:
    """Move every replica off node onto open nodes, or change nothing and return None."""
    reps = sorted(state.on_node[node.id], key=lambda r: (-r.resources.get("GPU", 0), -r.resources.get("CPU", 0), r.id))
    done: list[tuple[Replica, str]] = []
    state.hide(node.id)
    for rep in reps:
        chosen = fallback = None
        for target in state.candidates(rep, node):
            if target == node.id or target in closed:
                continue
            if spread and _collapses(state, rep, node.id, target):
                fallback = fallback or target
                continue
            chosen = target
            break
        chosen = chosen or fallback
        if chosen is None:
            for rep_done, dst in reversed(done):
                state.place(rep_done, dst, node.id)
            state.unhide(node.id)
            return None
        state.place(rep, node.id, chosen)
        done.append((rep, chosen))
    return done


def _node_key(state: _State, node: Node, kind: str) -> tuple:
    reps = state.on_node[node.id]
    used = sum(r.resources.get("GPU", 0.0) + 0.01 * r.resources.get("CPU", 0.0) for r in reps)
    if kind == "emptiest-first":
        return (-node.cost, len(reps), used, node.id)
    if kind == "least-used-first":
        return (-node.cost, used, len(reps), node.id)
    return (node.id,)


def _run(
    nodes: list[Node], replicas: list[Replica], kind: str, spread: bool, use_idle: bool = True
) -> tuple[list[str], list[dict], float]:
    """Drain nodes greedily; the next candidate is chosen on the current state (a lazy heap), so nodes that
    just received replicas move back in the queue instead of being drained right after. ``use_idle=False``
    keeps empty nodes out of the targets (they are free already: filling one frees nothing)."""
    state = _State(nodes, replicas)
    closed: set[str] = set()
    if not use_idle:
        for n in nodes:
            if not n.head and not state.on_node[n.id]:
                closed.add(n.id)
                state.hide(n.id)
    drained: list[str] = []
    moves: list[dict] = []
    value = 0.0
    heap = [(_node_key(state, n, kind), n.id) for n in nodes if not n.head and state.on_node[n.id]]
    heapq.heapify(heap)
    by_id = {n.id: n for n in nodes}
    tried: set[str] = set()
    while heap:
        key, node_id = heapq.heappop(heap)
        node = by_id[node_id]
        if node_id in tried or not state.on_node[node_id]:
            continue
        current = _node_key(state, node, kind)
        if current != key:  # it received replicas since it was queued
            heapq.heappush(heap, (current, node_id))
            continue
        tried.add(node_id)
        done = _try_drain(state, node, closed, spread)
        if done is None:
            continue
        closed.add(node.id)
        drained.append(node.id)
        value += node.cost
        for rep, dst in done:
            moves.append(state.move(rep, node.id, dst))
            state.on_node[dst].append(rep)
        state.on_node[node.id] = []
    return drained, _compress(moves), value


def _compress(moves: list[dict]) -> list[dict]:
    """A replica moved twice (A to B, then B to C as B was drained too) is one move, A to C."""
    first_from: dict[str, str] = {}
    last: dict[str, dict] = {}
    order: list[str] = []
    for m in moves:
        if m["replica"] not in first_from:
            first_from[m["replica"]] = m["from"]
            order.append(m["replica"])
        last[m["replica"]] = m
    return [{**last[r], "from": first_from[r]} for r in order if first_from[r] != last[r]["to"]]


def _collapsed_groups(replicas: list[Replica], moves: list[dict]) -> int:
    where = {r.id: r.node for r in replicas}
    for m in moves:
        where[m["replica"]] = m["to"]
    groups: dict[tuple[str, str], set[str]] = defaultdict(set)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    before: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in replicas:
        groups[r.group].add(where[r.id])
        counts[r.group] += 1
        before[r.group].add(r.node)
    return sum(1 for g, ns in groups.items() if counts[g] >= 2 and len(ns) < 2 and len(before[g]) >= 2)


def plan(state: dict[str, Any]) -> dict[str, Any]:
    """Plan from the JSON shape in the module docstring; returns the plan as a JSON-ready dict."""
    nodes, replicas = parse(state)
    return plan_objects(nodes, replicas).as_dict()


def plan_objects(nodes: list[Node], replicas: list[Replica]) -> Plan:
    counts: dict[str, int] = defaultdict(int)
    for r in replicas:
        counts[r.node] += 1
    idle = sorted(n.id for n in nodes if not n.head and not counts[n.id])
    # Expensive, nearly empty nodes first: most value for fewest moves; the id order is the naive baseline's.
    orders = ["emptiest-first", "least-used-first", "naive-first-fit"]
    best: tuple | None = None

    def consider(name: str, spread: bool, use_idle: bool = True) -> None:
        nonlocal best
        drained, moves, _ = _run(nodes, replicas, name, spread, use_idle)
        value = net_value(nodes, replicas, drained, moves)
        score = (-value, len(moves), _collapsed_groups(replicas, moves), name, not spread, use_idle)
        if best is None or score < best[0]:
            best = (score, name, drained, moves)

    for name in orders:
        consider(name, spread=True)
        if idle:
            consider(name, spread=True, use_idle=False)
    assert best is not None
    # Spreading is the last priority: without it, the best order may free more nodes.
    consider(best[1], spread=False)
    if idle:
        consider(best[1], spread=False, use_idle=False)
    if len(nodes) * len(replicas) <= NAIVE_CANDIDATE_LIMIT:
        # Small enough to afford the first-fit baseline itself as a candidate: never worse than it.
        naive = naive_plan(nodes, replicas)
        value = net_value(nodes, replicas, naive.nodes_to_drain, naive.moves)
        score = (-value, len(naive.moves), _collapsed_groups(replicas, naive.moves), "first-fit", True, True)
        if score < best[0]:
            best = (score, "first-fit", naive.nodes_to_drain, naive.moves)
    assert best is not None
    _, name, drained, moves = best
    by_id = {n.id: n for n in nodes}
    freed: dict[str, float] = defaultdict(float)
    for node_id in drained:
        for k, v in by_id[node_id].resources.items():
            freed[k] += v
    return Plan(nodes_to_drain=drained, moves=moves, freed=dict(freed), idle_nodes=idle, strategy=name)


def net_value(nodes: list[Node], replicas: list[Replica], drained: list[str], moves: list[dict]) -> float:
    """What a plan frees: the cost of the nodes it drains, less that of nodes that were empty and receive
    replicas (an empty node is free already; filling it gives that back)."""
    occupied = {r.node for r in replicas}
    cost = {n.id: n.cost for n in nodes}
    filled = {m["to"] for m in moves if m["to"] not in occupied}
    return sum(cost[n] for n in drained) - sum(cost[n] for n in filled)


def naive_plan(nodes: list[Node], replicas: list[Replica]) -> Plan:
    """The baseline: nodes in id order, each replica to the first node (by id) where it fits."""
    state = _State(nodes, replicas)
    closed: set[str] = set()
    drained, moves = [], []
    order = sorted((n for n in nodes if not n.head and state.on_node[n.id]), key=lambda n: n.id)
    for node in order:
        done: list[tuple[Replica, str]] = []
        ok = True
        for rep in sorted(state.on_node[node.id], key=lambda r: r.id):
            target = next(
                (
                    t.id
                    for t in sorted(nodes, key=lambda n: n.id)
                    if t.id != node.id and t.id not in closed and _eligible(rep, node, t) and state.fits(rep, t.id)
                ),
                None,
            )
            if target is None:
                ok = False
                break
            state.place(rep, node.id, target)
            done.append((rep, target))
        if not ok:
            for rep, dst in reversed(done):
                state.place(rep, dst, node.id)
            continue
        closed.add(node.id)
        drained.append(node.id)
        for rep, dst in done:
            moves.append(state.move(rep, node.id, dst))
            state.on_node[dst].append(rep)
        state.on_node[node.id] = []
    return Plan(drained, _compress(moves), {}, strategy="naive")


def validate(state: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Every rule a plan must keep; returns the violations (empty when the plan is valid)."""
    nodes, replicas = parse(state)
    by_node = {n.id: n for n in nodes}
    by_rep = {r.id: r for r in replicas}
    errors: list[str] = []
    where = {r.id: r.node for r in replicas}
    for m in result["moves"]:
        rep = by_rep.get(m["replica"])
        if rep is None:
            errors.append(f"move of unknown replica {m['replica']}")
            continue
        if where[rep.id] != m["from"]:
            errors.append(f"replica {rep.id} moved from {m['from']} but is on {where[rep.id]}")
        target = by_node.get(m["to"])
        if target is None:
            errors.append(f"replica {rep.id} moved to unknown node {m['to']}")
            continue
        if not _eligible(rep, by_node[rep.node], target):
            errors.append(f"replica {rep.id} moved out of its pool to {target.id}")
        where[rep.id] = m["to"]
    drained = set(result["nodes_to_drain"])
    for node_id in drained:
        if by_node[node_id].head:
            errors.append(f"head node {node_id} drained")
    for rep_id, node_id in where.items():
        if node_id in drained:
            errors.append(f"drained node {node_id} still holds {rep_id}")
    use: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for rep_id, node_id in where.items():
        for k, v in by_rep[rep_id].resources.items():
            use[node_id][k] += v
    for node_id, res in use.items():
        for k, v in res.items():
            if v > by_node[node_id].resources.get(k, 0.0) + 1e-6:
                errors.append(f"node {node_id} over capacity in {k}: {v} > {by_node[node_id].resources.get(k, 0.0)}")
    # Cards that receive replicas: what every replica on them really takes fits the card's memory.
    card_of = {r.id: r.card for r in replicas}
    received: set[tuple[str, int]] = set()
    for m in result["moves"]:
        if m.get("card") is not None:
            card_of[m["replica"]] = m["card"]
            received.add((m["to"], m["card"]))
    taken: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for rep_id, node_id in where.items():
        card, node, need = card_of.get(rep_id), by_node[node_id], by_rep[rep_id].card_need()
        if card is not None and need is not None and node.cards and 0 <= card < len(node.cards):
            taken[(node_id, card)][0] += need[0]
            taken[(node_id, card)][1] += need[1]
    for node_id, card in sorted(received):
        share, mib = taken[(node_id, card)]
        if share > 1 + 1e-6 or mib > by_node[node_id].cards[card] + 1e-6:
            errors.append(
                f"card {card} of node {node_id}: its replicas take {share:g} of it and hold {mib:g} MiB of its "
                f"{by_node[node_id].cards[card]:g}"
            )
    return errors


def relocate(nodes: list[Node], replicas: list[Replica], drain: list[str]) -> list[dict] | None:
    """Can every replica on the ``drain`` nodes be placed on the other nodes at once (all drained together)?

    Returns the moves (best fit, pool rules kept), or None when some replica would fit nowhere: what execution
    checks on a fresh observation before it drains anything.
    """
    state = _State(nodes, replicas)
    by_id = {n.id: n for n in nodes}
    closed = {node_id for node_id in drain if node_id in by_id}
    for node_id in closed:
        state.hide(node_id)
    moves: list[dict] = []
    for node_id in drain:
        if node_id not in by_id:
            continue
        done = _try_drain(state, by_id[node_id], closed, spread=False)
        if done is None:
            return None
        for rep, dst in done:
            moves.append(state.move(rep, node_id, dst))
            state.on_node[dst].append(rep)
        state.on_node[node_id] = []
    return moves
