"""Sign the command-line client in through the browser, for people who have no password (single sign-on).

``servectl login --browser`` asks for a login request and prints a link and a short code. The person opens the link
in the dashboard, where they are signed in (through the provider if need be), and types the code their terminal
shows, as in the OAuth device flow: a link someone else started and sent cannot be allowed by pressing a button,
only by typing a code that only that someone's terminal shows. The page says from which address and when the
sign-in was started. The client, polling with a secret only it holds, then receives a new API token. Nothing
secret is stored while it waits: the request keeps a hash of the poll secret and, once allowed, the user's id; the
token is minted when the client collects it, once.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.core.cache import cache

from apps.audit.services import audit_record

from .models import hash_secret
from .services import login_token_create

TTL_S = 600
REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")  # what secrets.token_urlsafe makes; anything else is unknown
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I
WRONG_CODES_ALLOWED = 5  # then the sign-in is denied: whoever types codes is guessing


class CliLoginGone(Exception):
    """Unknown, expired, denied or already collected; the message says which."""


@dataclass
class Started:
    id: str
    user_code: str
    poll_secret: str
    expires_in: int


def _key(request_id: str) -> str:
    return f"cli-login:{request_id}"


def start(*, client_address: str = "") -> Started:
    """A new sign-in request, remembering the address it came from (not chosen by the requester, unlike a label)."""
    from django.utils import timezone

    request_id = secrets.token_urlsafe(16)
    poll_secret = secrets.token_urlsafe(32)
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    user_code = f"{code[:4]}-{code[4:]}"
    cache.set(
        _key(request_id),
        {
            "secret_hash": hash_secret(poll_secret),
            "code": user_code,
            "state": "pending",
            "from": client_address[:64],
            "at": timezone.now().isoformat(),
            "wrong": 0,
        },
        TTL_S,
    )
    return Started(request_id, user_code, poll_secret, TTL_S)


class WrongCode(Exception):
    """The code typed is not the terminal's; the message says how many tries are left."""


def _normal(code: str) -> str:
    return "".join(c for c in str(code or "").upper() if c.isalnum())


def pending(request_id: str) -> dict[str, Any]:
    entry = cache.get(_key(request_id)) if REQUEST_ID.fullmatch(request_id or "") else None
    if entry is None:
        raise CliLoginGone("This sign-in link has expired or was already used: run servectl login again.")
    return entry


def decide(*, request_id: str, user: Any, allow: bool, code: str = "") -> None:
    """Allow (with the code the terminal shows, typed) or deny. Wrong codes count; the fifth denies the sign-in."""
    entry = pending(request_id)
    if entry["state"] != "pending":
        raise CliLoginGone(f"This sign-in was already {entry['state']}.")
    if allow and not hmac.compare_digest(_normal(code), _normal(entry["code"])):
        entry["wrong"] = entry.get("wrong", 0) + 1
        if entry["wrong"] >= WRONG_CODES_ALLOWED:
            entry.update(state="denied", user_id=user.pk)
            cache.set(_key(request_id), entry, TTL_S)
            audit_record(actor=user, action="token.cli_login_deny", source="ui", after={"reason": "wrong codes"})
            raise CliLoginGone("Too many wrong codes: this sign-in is denied. Run servectl login again.")
        cache.set(_key(request_id), entry, TTL_S)
        left = WRONG_CODES_ALLOWED - entry["wrong"]
        raise WrongCode(f"That is not the code your terminal shows ({left} tries left).")
    entry.update(state="allowed" if allow else "denied", user_id=user.pk)
    cache.set(_key(request_id), entry, TTL_S)
    audit_record(actor=user, action="token.cli_login_" + ("allow" if allow else "deny"), source="ui")


def collect(*, request_id: str, poll_secret: str) -> tuple[str, Any] | None:
    """The new token and its expiry once allowed; None while pending. Raises CliLoginGone otherwise."""
    entry = pending(request_id)
    if not hmac.compare_digest(entry["secret_hash"], hash_secret(poll_secret or "")):
        raise CliLoginGone("This sign-in link has expired or was already used: run servectl login again.")
    if entry["state"] == "pending":
        return None
    cache.delete(_key(request_id))  # one collection, whatever happens next
    if entry["state"] != "allowed":
        raise CliLoginGone("The sign-in was denied in the browser.")
    user = get_user_model().objects.filter(pk=entry["user_id"], is_active=True).first()
    if user is None:
        raise CliLoginGone("The account that allowed this sign-in is no longer active.")
    token, secret = login_token_create(user=user, name="servectl", source="cli")
    return secret, token.expires_at
