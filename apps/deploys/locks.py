"""Leases on a cluster's push state: one push at a time (the lock), one status poller at a time (the poll lease).

Each is a conditional UPDATE with an expiry, so a worker that dies holding one lets go when its lease ends.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from .models import PushState


def acquire_lock(*, cluster_id: int, owner: str | None = None) -> str | None:
    """Claim the cluster's push lock with a conditional UPDATE; the lease expires if a worker dies."""
    owner = owner or uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        PushState.objects.filter(pk=cluster_id)
        .filter(Q(lock_owner="") | Q(lock_expires_at__lt=now))
        .update(lock_owner=owner, lock_expires_at=now + timedelta(seconds=settings.CLUSTER_LOCK_TTL_S))
    )
    return owner if claimed else None


def release_lock(*, cluster_id: int, owner: str) -> None:
    PushState.objects.filter(pk=cluster_id, lock_owner=owner).update(lock_owner="", lock_expires_at=None)


def poll_claim(*, cluster_id: int, lease_s: float) -> str | None:
    """Ask for Serve's status to be followed until it settles.

    Each call counts as a request the poller must follow (``poll_requests``). Returns a token when no poller holds
    the cluster's poll lease (the caller starts one); None when one runs already (it sees the new request and
    keeps polling). So a cluster has one status poller at most, however many pushes arrive.
    """
    PushState.objects.filter(pk=cluster_id).update(poll_requests=F("poll_requests") + 1)
    token = uuid.uuid4().hex
    now = timezone.now()
    claimed = (
        PushState.objects.filter(pk=cluster_id)
        .filter(Q(poll_lease_until__isnull=True) | Q(poll_lease_until__lt=now))
        .update(poll_token=token, poll_lease_until=now + timedelta(seconds=lease_s))
    )
    return token if claimed else None


def poll_extend(*, cluster_id: int, token: str, lease_s: float) -> int | None:
    """Keep the poll lease; returns the request count seen, or None when another poller took over."""
    updated = PushState.objects.filter(pk=cluster_id, poll_token=token).update(
        poll_lease_until=timezone.now() + timedelta(seconds=lease_s)
    )
    if not updated:
        return None
    return PushState.objects.filter(pk=cluster_id).values_list("poll_requests", flat=True).first()


def poll_release(*, cluster_id: int, token: str, requests_seen: int) -> bool:
    """Let go of the poll lease, unless a push asked for polling since ``requests_seen`` (then keep polling)."""
    return bool(
        PushState.objects.filter(pk=cluster_id, poll_token=token, poll_requests=requests_seen).update(
            poll_token="", poll_lease_until=None
        )
    )
