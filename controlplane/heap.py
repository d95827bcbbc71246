"""The heap a long-running process starts with is left out of the garbage collector's way.

Django, DRF and Celery leave a few hundred thousand long-lived objects (modules, classes, URL patterns, querysets'
compiled parts) in the heap at start-up. Every full collection walks them again, and a scrape that builds thousands
of small objects triggers collections often: a scrape of 5,000 series spent a fifth of its CPU there (40,750 ->
51,519 samples/s once frozen, benchmarks/metrics_bench.py). ``gc.freeze()`` moves what exists now to a permanent
generation that collections skip; everything made later is collected as before. Called once a process has loaded
its application: a Celery worker (each pool process) when it is ready, a gunicorn worker after it loaded the app.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def settle() -> int:
    """Collect once, then freeze what is left; returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("heap settled: %d objects left out of later collections", frozen)
    return frozen
