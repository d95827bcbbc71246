"""Verified addresses: a signed link mailed at sign-up proves an address is the account's."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail

from apps.audit.services import audit_record
from apps.core.links import public_url

User = get_user_model()


EMAIL_SALT = "teams.verify-email"
EMAIL_LINK_DAYS = 3


def email_is_verified(user: AbstractBaseUser) -> bool:
    """Whether the user's current address was proven to be theirs."""
    from ..models import VerifiedEmail

    email = (getattr(user, "email", "") or "").strip().lower()
    return bool(email) and VerifiedEmail.objects.filter(user=user, email__iexact=email).exists()


def email_mark_verified(*, user: AbstractBaseUser, how: str, source: str = "ui") -> None:
    from ..models import VerifiedEmail

    email = (user.email or "").strip().lower()
    if not email or email_is_verified(user):
        return
    VerifiedEmail.objects.create(user=user, email=email, how=how)
    audit_record(actor=user, action="user.email_verified", obj=user, after={"email": email, "how": how}, source=source)


def email_verification_send(*, user: AbstractBaseUser) -> str:
    """Mail a link that proves the user receives mail at their address; returns its path."""
    email = (user.email or "").strip().lower()
    token = signing.dumps({"u": user.pk, "e": email}, salt=EMAIL_SALT, compress=True)
    path = f"/accounts/verify-email/{token}/"
    send_mail(
        "Confirm your address",
        f"Open this link to confirm that {email} is yours on the Ray Serve control plane (it works for "
        f"{EMAIL_LINK_DAYS} days):\n\n{public_url(path)}\n\nIf you did not sign up, ignore this mail.",
        None,
        [email],
        fail_silently=True,
    )
    return path


def email_verify(token: str) -> Any:
    """The user a verification link names, now verified; ValidationError when the link cannot be used."""
    try:
        data = signing.loads(token, salt=EMAIL_SALT, max_age=timedelta(days=EMAIL_LINK_DAYS))
        user = User.objects.get(pk=int(data["u"]), is_active=True)
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError, ValueError) as exc:
        raise ValidationError({"link": ["This link is not valid or has expired: ask for a new one."]}) from exc
    if (user.email or "").strip().lower() != data.get("e"):
        raise ValidationError({"link": ["The account's address changed since this link was sent: ask for a new one."]})
    email_mark_verified(user=user, how="link")
    return user
