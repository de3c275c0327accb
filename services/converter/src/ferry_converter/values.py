"""Reading numbers out of wire-form (JSON) objects."""

from __future__ import annotations

from typing import Any


def as_int(value: Any) -> int | None:
    """An integer JSON value (``2`` or ``2.0``), ``None`` for anything else (``true`` is not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def int_or(value: Any, default: int) -> int:
    found = as_int(value)
    return default if found is None else found
