"""Kubernetes resource quantities (``500m``, ``2``, ``1Gi``): parsing, rounding and canonical text."""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
BINARY_SUFFIXES = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")


def parse_quantity_with_unit(value: object) -> tuple[Decimal, bool] | None:
    """(amount, written with a binary suffix?) of a quantity; ``None`` when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value)), False
    if not isinstance(value, str):
        return None
    match = _QUANTITY.match(value.strip())
    if match is None:
        return None
    suffix = match.group(2) or ""
    try:
        return Decimal(match.group(1)) * _SUFFIX[suffix], suffix in BINARY_SUFFIXES
    except InvalidOperation:
        return None


def parse_quantity(value: object) -> Decimal | None:
    """``"500m"`` → 0.5, ``2`` → 2, ``"1Gi"`` → 1073741824; ``None`` when it is not a quantity."""
    parsed = parse_quantity_with_unit(value)
    return parsed[0] if parsed is not None else None


def quantity_ceil(value: object) -> int:
    """The quantity rounded up to an integer (0 when absent or invalid)."""
    parsed = parse_quantity(value)
    return math.ceil(parsed) if parsed is not None else 0


def format_quantity(amount: Decimal, binary: bool) -> str:
    """Canonical text for a summed quantity (``17``, ``33Gi``, ``500m``)."""
    if amount == amount.to_integral_value():
        whole = int(amount)
        if binary and whole:
            for suffix in BINARY_SUFFIXES:
                unit = int(_SUFFIX[suffix])
                if whole % unit == 0:
                    return f"{whole // unit}{suffix}"
        return str(whole)
    return f"{math.ceil(amount * 1000)}m"
