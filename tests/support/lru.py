"""LRU replay of a request sequence: what a model cache with ``slots`` entries would have hit."""

from __future__ import annotations

from collections import OrderedDict


def lru_hit_rate(sequence: list[str], slots: int) -> float:
    cache: OrderedDict[str, None] = OrderedDict()
    hits = 0
    for model in sequence:
        if model in cache:
            hits += 1
            cache.move_to_end(model)
        else:
            cache[model] = None
            if len(cache) > slots:
                cache.popitem(last=False)
    return hits / len(sequence)
