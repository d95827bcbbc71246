from __future__ import annotations

from typing import Any

MAX_ID = 2**63 - 1


def parse_id(value: Any) -> int | None:
    """A database id from a query string or JSON body, or None: never a value the database would overflow on."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 < value <= MAX_ID else None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        return number if 0 < number <= MAX_ID else None
    return None
