"""The request principal for apps below ``apps.teams`` in the layers (the audit log): the function named by the
``PRINCIPAL_FACTORY`` setting (``apps.teams.principal.principal_of``), as Django names its user model."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string


def principal_of(request: Any) -> Any:
    return import_string(settings.PRINCIPAL_FACTORY)(request)
