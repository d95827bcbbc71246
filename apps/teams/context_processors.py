"""``principal`` in every template: pages decide what to show by the same principal as the API."""

from __future__ import annotations

from typing import Any

from .principal import principal_of


def principal(request: Any) -> dict[str, Any]:
    return {"principal": principal_of(request)}
