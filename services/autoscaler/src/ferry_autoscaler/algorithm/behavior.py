"""The effective scaling behaviour of a policy: Kthena's mutating-webhook defaults, then the CRD's.

Kthena's API server fills nested CRD defaults only where the user wrote the parent object, and its
mutating webhook (``autoscalingpolicy_mutator.go``) then patches whole missing sub-objects (spec
§1.3). Ferry has no webhook, so the autoscaler applies the same procedure when it reads a policy:
a policy means the same thing here as in Kthena.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry_schemas.durations import parse_duration

JSON = Mapping[str, Any]


@dataclass(frozen=True)
class StepPolicy:
    """A stable policy (``scaleDown`` or ``scaleUp.stablePolicy``)."""

    instances: int
    percent: int
    period: float
    """Rate-limit look-back (seconds); 0 disables the limit."""
    select_policy: str
    """``Or`` (more permissive), ``And`` (more restrictive); anything else: no limit."""
    stabilization_window: float


@dataclass(frozen=True)
class PanicSettings:
    percent: int
    period: float
    threshold_percent: int | None
    hold: float
    """Panic lasts this long after the last threshold hit; 0 disables panic."""


@dataclass(frozen=True)
class Behavior:
    scale_down: StepPolicy
    scale_up: StepPolicy
    panic: PanicSettings


WEBHOOK_SCALE_DOWN = StepPolicy(0, 100, 60.0, "Or", 300.0)
WEBHOOK_SCALE_UP = StepPolicy(4, 100, 60.0, "Or", 0.0)
WEBHOOK_PANIC = PanicSettings(0, 0.0, 200, 0.0)
WEBHOOK_BEHAVIOR = Behavior(WEBHOOK_SCALE_DOWN, WEBHOOK_SCALE_UP, WEBHOOK_PANIC)


def _seconds(value: Any, default: float) -> float:
    if value is None:
        return default
    return parse_duration(str(value))


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _step(raw: JSON, default_window: float) -> StepPolicy:
    """CRD defaults (instances 1, percent 100, period 15s, Or) plus the webhook's window default."""
    return StepPolicy(
        instances=_int(raw.get("instances"), 1),
        percent=_int(raw.get("percent"), 100),
        period=_seconds(raw.get("period"), 15.0),
        select_policy=str(raw.get("selectPolicy") or "Or"),
        stabilization_window=_seconds(raw.get("stabilizationWindow"), default_window),
    )


def _panic(raw: JSON) -> PanicSettings:
    threshold = raw.get("panicThresholdPercent")
    return PanicSettings(
        percent=_int(raw.get("percent"), 1000),
        period=_seconds(raw.get("period"), 0.0),
        threshold_percent=200 if threshold is None else int(threshold),
        hold=_seconds(raw.get("panicModeHold"), 60.0),
    )


def resolve_behavior(raw: JSON | None) -> Behavior:
    """The behaviour Kthena would run for ``spec.behavior`` as written (``None``/``{}`` = unset)."""
    if not raw:
        return WEBHOOK_BEHAVIOR
    down_raw = raw.get("scaleDown") or {}
    scale_down = _step(down_raw, 300.0) if down_raw else WEBHOOK_SCALE_DOWN
    up_raw = raw.get("scaleUp") or {}
    if not up_raw:
        return Behavior(scale_down, WEBHOOK_SCALE_UP, WEBHOOK_PANIC)
    stable_raw = up_raw.get("stablePolicy") or {}
    scale_up = _step(stable_raw, 0.0) if stable_raw else WEBHOOK_SCALE_UP
    panic_raw = up_raw.get("panicPolicy") or {}
    panic = _panic(panic_raw) if panic_raw else WEBHOOK_PANIC
    return Behavior(scale_down, scale_up, panic)
