"""Long-running processes leave their loaded application out of later garbage collections (controlplane/heap.py)."""

from __future__ import annotations

import gc
import weakref

import pytest
from celery.signals import worker_process_init, worker_ready


class Cycle:
    me: Cycle | None = None


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the test run collects as before


@pytest.mark.parametrize("signal", [worker_ready, worker_process_init], ids=["worker", "pool process"])
def test_a_celery_worker_freezes_its_loaded_heap(unfrozen, signal):
    import controlplane.celery  # noqa: F401  (connects the handlers, as `celery -A controlplane` does)

    assert gc.get_freeze_count() == 0
    signal.send(sender=None)
    frozen = gc.get_freeze_count()
    assert frozen > 50_000, frozen  # Django, DRF, Celery and the apps: what every collection walked before
    # Objects made later are not frozen (a frozen object may still be freed by its count, so the count can drop when
    # another thread lets one go), and a cycle made later is collected as before.
    made_later = [[i] for i in range(1000)]
    assert gc.get_freeze_count() <= frozen, len(made_later)
    cycle = Cycle()
    cycle.me = cycle
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert gone() is None


def test_a_gunicorn_worker_freezes_its_heap_once_the_app_is_loaded(unfrozen):
    from controlplane import gunicorn

    gunicorn.post_worker_init(None)
    assert gc.get_freeze_count() > 50_000
