"""Waiting for an observable effect with a deadline (never a bare sleep), and small kubectl readers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.conftest import KubeEnv

T = TypeVar("T")


def eventually(check: Callable[[], T], what: str, timeout: float = 120, interval: float = 0.5) -> T:
    """``check()``'s first truthy value; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if value := check():
                return value
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")


def get_json(kube: KubeEnv, namespace: str, *what: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(kube.kubectl_run("-n", namespace, "get", *what, "-o", "json").stdout)
    return result


def has_condition(obj: dict[str, Any], kind: str, status: str = "True") -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == status for c in conditions)
