"""LRU replay of a request sequence: what a model cache with ``slots`` entries would have loaded and hit."""

from __future__ import annotations

from collections import OrderedDict


def lru_loads(sequence: list[str], slots: int) -> int:
    """How many requests miss (load a model) in an LRU cache of ``slots`` models."""
    cache: OrderedDict[str, None] = OrderedDict()
    loads = 0
    for model in sequence:
        if model in cache:
            cache.move_to_end(model)
            continue
        loads += 1
        cache[model] = None
        if len(cache) > slots:
            cache.popitem(last=False)
    return loads


def lru_hit_rate(sequence: list[str], slots: int) -> float:
    return 1 - lru_loads(sequence, slots) / len(sequence)
