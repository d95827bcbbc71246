"""Secrets: one list of what is secret, redacted in one place, and encrypted at rest.

- ``SECRET_FIELDS`` names every secret field of every model and payload (kubeconfigs, dashboard and Prometheus
  credentials, webhook secrets, API token hashes, passwords). ``redact()`` replaces their values with a marker
  that says only whether one is set; the audit log, the admin's audit and the API's error paths go through it.
- ``SecretRedactingFilter`` masks credentials that reach a log line anyway (Authorization headers, kubeconfig
  keys, ``password=``).
- ``EncryptedTextField`` keeps a value encrypted in the database with Fernet (AES-128-CBC + HMAC-SHA256) under
  keys from the environment (``FIELD_ENCRYPTION_KEYS``, newest first, so keys rotate: old ones still decrypt,
  ``manage.py rotate_secrets`` re-encrypts with the newest). A database dump alone reveals nothing.
"""

from __future__ import annotations

import logging
import re
import traceback
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import models

SECRET_FIELDS = frozenset(
    {
        "auth_token",
        "kubeconfig",
        "prometheus_credential",
        "secret",
        "secret_hash",
        "webhook_secret",
        "password",
        "client_secret",
        "token",
    }
)
REDACTED_SET = "[redacted]"
REDACTED_EMPTY = "[empty]"
PREFIX = "fernet:"


def is_secret(name: str) -> bool:
    return name in SECRET_FIELDS


def redact(value: Any) -> Any:
    """A copy of ``value`` with every secret field's value replaced (recursively through dicts and lists)."""
    if isinstance(value, dict):
        return {
            k: ((REDACTED_SET if v not in (None, "", {}) else REDACTED_EMPTY) if is_secret(str(k)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


# ---- logs -------------------------------------------------------------------------------------------------------

_PATTERNS = [
    (re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=\-]{8,}"), r"\1 [redacted]"),
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+(\s+[^'\"\s,}]+)?"), r"\1[redacted]"),
    (
        re.compile(
            r"(?i)((?:client-key-data|client-certificate-data|token|password|secret)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"
        ),
        r"\1[redacted]",
    ),
]


def mask(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class SecretRedactingFilter(logging.Filter):
    """Mask credentials in a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not format: leave it to the handler
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info = None
        return True


# ---- at rest ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fernet() -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS is empty: secrets cannot be stored.")
    return MultiFernet([Fernet(k) for k in keys])


def encrypt(plain: str) -> str:
    if not plain:
        return ""
    return PREFIX + _fernet().encrypt(plain.encode()).decode()


def decrypt(stored: str) -> str:
    if not stored or not stored.startswith(PREFIX):
        return stored or ""  # written before encryption existed; the migration encrypts those
    from cryptography.fernet import InvalidToken

    try:
        return _fernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            "A stored secret does not decrypt with any key in FIELD_ENCRYPTION_KEYS (was a key removed too soon?)"
        ) from exc


def rotate(stored: str) -> str:
    """Re-encrypt with the newest key (for ``manage.py rotate_secrets``)."""
    if not stored:
        return stored
    if not stored.startswith(PREFIX):
        return encrypt(stored)
    return PREFIX + _fernet().rotate(stored[len(PREFIX) :].encode()).decode()


class EncryptedTextField(models.TextField):
    """A text field whose value is encrypted in the database and plain in Python."""

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return decrypt(value) if isinstance(value, str) else value

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None:
            return None
        if isinstance(value, str) and value.startswith(PREFIX):
            return value  # already encrypted (a migration or rotation writing raw values)
        return encrypt(str(value))

    def value_to_string(self, obj: Any) -> str:
        # dumpdata and fixtures carry the ciphertext, never the secret.
        return encrypt(str(self.value_from_object(obj) or ""))
