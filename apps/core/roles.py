"""Team roles, lowest to highest: viewer reads; member deploys; admin manages members, tokens and quota requests;
owner can also delete the team."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class RequestState(models.TextChoices):
    """The states of a request someone decides: quota requests and join requests."""

    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


ROLE_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3, Role.OWNER: 4}


def role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and ROLE_RANK.get(role, 0) >= ROLE_RANK[needed]
