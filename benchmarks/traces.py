"""Synthetic traffic traces for the compaction simulator (seeded, so every run sees the same traffic).

Each trace is a list of deployments with a per-minute load (requests per second):

- diurnal: 40 deployments, daily peaks at different hours, noise;
- bursty: 30 deployments, a low base with random bursts of 5-10x lasting 10-60 minutes;
- many-models: 150 small multiplexed-style deployments with Zipf popularity that drifts over the days.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MINUTES_PER_DAY = 24 * 60


@dataclass
class Deployment:
    name: str
    gpus: float  # per replica
    capacity: float  # requests/s one replica serves at its target
    min_replicas: int
    max_replicas: int
    load: list[float]  # requests/s for each minute


def diurnal(days: int = 3, seed: int = 1) -> list[Deployment]:
    rng = random.Random(seed)
    out = []
    for i in range(40):
        peak = rng.uniform(20, 200)
        phase = rng.uniform(0, MINUTES_PER_DAY)
        gpus = rng.choice([0.25, 0.5, 0.5, 1, 1, 2])
        load = []
        for t in range(days * MINUTES_PER_DAY):
            day = 0.5 * (1 + math.sin(2 * math.pi * (t - phase) / MINUTES_PER_DAY))
            load.append(max(0.0, peak * (0.08 + 0.92 * day**2) * rng.uniform(0.9, 1.1)))
        out.append(Deployment(f"diurnal-{i}", gpus, capacity=10, min_replicas=1, max_replicas=24, load=load))
    return out


def bursty(days: int = 3, seed: int = 2) -> list[Deployment]:
    rng = random.Random(seed)
    out = []
    steps = days * MINUTES_PER_DAY
    for i in range(30):
        base = rng.uniform(5, 30)
        load = [base * rng.uniform(0.8, 1.2) for _ in range(steps)]
        t = 0
        while t < steps:
            t += int(rng.expovariate(1 / 240))
            length, factor = rng.randint(10, 60), rng.uniform(5, 10)
            for k in range(t, min(t + length, steps)):
                load[k] *= factor
        out.append(
            Deployment(
                f"bursty-{i}", rng.choice([0.5, 1, 1, 2]), capacity=10, min_replicas=1, max_replicas=30, load=load
            )
        )
    return out


def many_models(days: int = 3, seed: int = 3) -> list[Deployment]:
    rng = random.Random(seed)
    out = []
    steps = days * MINUTES_PER_DAY
    n = 150
    ranks = list(range(1, n + 1))
    rng.shuffle(ranks)
    for i in range(n):
        drift_to = rng.randint(1, n)
        load = []
        for t in range(steps):
            rank = ranks[i] + (drift_to - ranks[i]) * t / steps
            daily = 0.6 + 0.4 * math.sin(2 * math.pi * t / MINUTES_PER_DAY)
            load.append(400 / rank**1.1 * daily * rng.uniform(0.85, 1.15))
        out.append(Deployment(f"model-{i}", 0.25, capacity=8, min_replicas=1, max_replicas=12, load=load))
    return out


TRACES = {"diurnal": diurnal, "bursty": bursty, "many-models": many_models}
