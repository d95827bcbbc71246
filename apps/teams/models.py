from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from apps.core.roles import ROLE_RANK, RequestState, Role, role_at_least

__all__ = [
    "ROLE_RANK",
    "Role",
    "role_at_least",
    "Team",
    "Membership",
    "ApiToken",
    "Invitation",
    "JoinRequest",
    "VerifiedEmail",
]

# Lowercase words joined by single hyphens: "--" is reserved as the separator of derived Serve app names.
SLUG_RE = r"^[a-z0-9]+(-[a-z0-9]+)*$"
slug_validator = RegexValidator(
    SLUG_RE, "Use lowercase letters, digits and single hyphens, starting and ending with a letter or digit."
)


class Team(models.Model):
    slug = models.CharField(max_length=30, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="membership_unique_team_user")]
        ordering = ["team__slug", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} as {self.role}"


TOKEN_PREFIX_LEN = 8


def hash_secret(secret: str) -> str:
    # Secrets are 32 random bytes, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


class ApiToken(models.Model):
    """A bearer token: ``Authorization: Token <prefix><rest>``. Only the hash is kept."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="api_tokens")
    role = models.CharField(max_length=10, choices=Role.choices, blank=True)
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=TOKEN_PREFIX_LEN, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def generate_secret() -> str:
        return secrets.token_urlsafe(32)

    def is_active(self, now: timezone.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


class Invitation(models.Model):
    """An invitation to join a team with a role, sent as a signed link that expires and works once."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    nonce_hash = models.CharField(max_length=64, help_text="sha256 of the link's random part; the link is not kept.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations_sent"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="invitations_accepted"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.email} to {self.team} as {self.role}"

    @property
    def state(self) -> str:
        if self.accepted_at:
            return "accepted"
        if self.revoked_at:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"


class JoinRequest(models.Model):
    """A user asks to join a team; its admins approve (with a role) or reject."""

    State = RequestState

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="join_requests")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="join_requests")
    message = models.TextField(blank=True, max_length=1000)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    role = models.CharField(max_length=10, choices=Role.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="join_requests_decided"
    )
    created_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["team", "user"], condition=models.Q(state="pending"), name="joinrequest_one_pending"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} asks to join {self.team} ({self.state})"


class VerifiedEmail(models.Model):
    """An address its account's owner proved to receive mail at (a link sent there, an invitation accepted from
    there, or a provider that verified it at single sign-on). Only a verified address lets a sign-in at the
    company's provider open an existing account: an address typed at sign-up is only a claim."""

    class How(models.TextChoices):
        LINK = "link", "Verification link"
        INVITATION = "invitation", "Invitation accepted"
        SSO = "sso", "Single sign-on (the provider verified it)"
        STAFF = "staff", "Set by a platform admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="verified_emails")
    email = models.EmailField()
    how = models.CharField(max_length=12, choices=How.choices)
    verified_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "email"], name="verified_email_once")]

    def __str__(self) -> str:
        return f"{self.email} ({self.how})"
