"""Go's ``fmt`` ``%v`` rendering of decoded JSON values, as Kthena prints engine arguments.

JSON numbers decode to float64 in Go, so ``128`` prints ``128`` but ``1000000`` prints ``1e+06``
(``strconv`` shortest ``%g`` with exponent threshold 6); ``null`` prints ``<nil>``; objects print
as ``map[k:v]`` with sorted keys and arrays as ``[a b]`` (``spec/booster.md`` §3.5).
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any


def go_float(value: float) -> str:
    """``strconv.FormatFloat(value, 'g', -1, 64)``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = list(digit_tuple)
    while len(digits) > 1 and digits[-1] == 0:
        digits.pop()
        exponent += 1
    while len(digits) > 1 and digits[0] == 0:
        digits.pop(0)
    nd = len(digits)
    dp = nd + exponent  # position of the decimal point relative to the first digit
    text = "".join(str(d) for d in digits)
    neg = "-" if sign else ""
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if nd > 1 else "")
        esign = "+" if exp >= 0 else "-"
        return f"{neg}{mantissa}e{esign}{abs(exp):02d}"
    if dp <= 0:
        return f"{neg}0.{'0' * -dp}{text}"
    if dp >= nd:
        return f"{neg}{text}{'0' * (dp - nd)}"
    return f"{neg}{text[:dp]}.{text[dp:]}"


def go_value(value: Any) -> str:
    """``fmt.Sprintf("%v", value)`` for a value decoded from JSON into ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return go_float(float(value))
    if isinstance(value, dict):
        inner = " ".join(f"{key}:{go_value(value[key])}" for key in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(item) for item in value) + "]"
    return str(value)


def go_type_name(value: Any) -> str:
    """The Go dynamic type of a JSON value decoded into ``interface{}`` (for error messages)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return "[]interface {}"
