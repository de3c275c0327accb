"""canonical_json's bytes are json.dumps's, whichever encoder made them: they name stored revisions."""

from __future__ import annotations

import json
import math
import random
from enum import StrEnum
from typing import Any

from ferry_schemas.bus import canonical_json


def reference(value: Any) -> bytes:
    """What every stored revision, desired-set id and status hash was computed from."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class Phase(StrEnum):
    RUNNING = "Running"


CHARACTERS = [chr(i) for i in range(0x80)] + ["\u2028", "\u2029", "é", "漢", "\U0001f600", "\x7f", "\u0085"]
FLOATS = [0.0, -0.0, 1.0, 0.1, 1e15, 1e16, 1e22, 1e-4, 1e-5, 2.5e-7, 5e-324, 1.7976931348623157e308, 0.5]


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.random()
    if depth > 3 or kind < 0.4:
        scalars = [
            lambda: "".join(rnd.choice(CHARACTERS) for _ in range(rnd.randint(0, 8))),
            lambda: rnd.choice(FLOATS),
            lambda: math.ldexp(rnd.random(), rnd.randint(-80, 80)),
            lambda: rnd.randint(-(2**63), 2**63 - 1),
            lambda: rnd.randint(-100, 100),
            lambda: rnd.choice([None, True, False, Phase.RUNNING, "1e5", "a:1.5]"]),
        ]
        return rnd.choice(scalars)()
    if kind < 0.7:
        keys = ["".join(rnd.choice(CHARACTERS) for _ in range(3)) for _ in range(4)]
        return {key: random_value(rnd, depth + 1) for key in keys}
    return [random_value(rnd, depth + 1) for _ in range(rnd.randint(0, 4))]


def test_random_values_give_json_dumps_bytes() -> None:
    rnd = random.Random(9)
    for _ in range(20000):
        value = random_value(rnd)
        assert canonical_json(value) == reference(value), repr(value)


def test_what_msgspec_writes_differently_falls_back() -> None:
    odd = [1e16, {"a": 3.25e-05}, [1e22], {2: 1, 10: 2}, {True: 1}, 2**70, (1, 2), {"k": "é\u2028\x01"}]
    for value in odd:
        assert canonical_json(value) == reference(value), repr(value)


def test_a_desired_set_like_value() -> None:
    value = {
        "owner": {"uid": "8c3e1f2a-1e5b-4c1e-9e7d-3e4f5a6b7c8d", "generation": 3},
        "children": [{"metadata": {"labels": {"revision": "3e4f1e9a0b"}}, "spec": {"replicas": 2}}],
        "errors": [],
    }
    assert canonical_json(value) == reference(value)
