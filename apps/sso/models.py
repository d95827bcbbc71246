"""Who signed in through the OpenID provider: the (issuer, subject) pair names a person, not their email."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class SsoIdentity(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identities")
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255, help_text="The ID token's sub: stable for the person at this issuer.")
    email = models.EmailField(blank=True)
    groups = models.JSONField(default=list, blank=True, help_text="The groups claim at the last sign-in.")
    managed_team_ids = models.JSONField(
        default=list, blank=True, help_text="Teams whose membership the group mapping made; only these it changes."
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_login_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"
