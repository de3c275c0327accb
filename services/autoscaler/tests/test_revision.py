"""Spec §7.2 (``revision_test.go``) and panic detection / recording (§4.2, §4.4), §7.9 mutator."""

from __future__ import annotations

import pytest
from ferry_autoscaler.algorithm.behavior import (
    WEBHOOK_BEHAVIOR,
    Behavior,
    PanicSettings,
    StepPolicy,
    resolve_behavior,
)
from ferry_autoscaler.algorithm.revision import History, ScalingState, correct

NEVER = 1e12
NOW = 1000.0


def behavior(down: tuple[int, int, str], up: tuple[int, int, str], panic_percent: int) -> Behavior:
    return Behavior(
        StepPolicy(down[0], down[1], NEVER, down[2], NEVER),
        StepPolicy(up[0], up[1], NEVER, up[2], NEVER),
        PanicSettings(panic_percent, NEVER, 200, 0.0),
    )


OR2 = (2, 20, "Or")
UP2 = (2, 100, "Or")
CASES = [
    # (panic, down, up, panic%, min, max, current, recommended, seed, expected)
    (False, OR2, UP2, 1000, 1, 20, 7, 7, None, 7),
    (False, (1, 40, "Or"), UP2, 1000, 1, 20, 10, 5, None, 6),
    (False, (1, 40, "And"), UP2, 1000, 1, 20, 10, 5, None, 9),
    (False, (1, 40, "Unknown"), UP2, 1000, 1, 20, 10, 5, None, 5),
    (False, OR2, UP2, 1000, 1, 20, 10, 5, ("max_recommendation", 9), 9),
    (False, (3, 25, "Or"), UP2, 1000, 1, 20, 10, 3, ("max_corrected", 12), 9),
    (False, OR2, (3, 100, "Or"), 1000, 1, 100, 5, 20, None, 10),
    (False, OR2, (3, 100, "And"), 1000, 1, 100, 5, 20, None, 8),
    (False, OR2, (3, 100, "Unknown"), 1000, 1, 100, 5, 20, None, 20),
    (False, OR2, (3, 100, "Or"), 1000, 1, 100, 5, 20, ("min_recommendation", 12), 10),
    (False, OR2, (2, 50, "Or"), 1000, 1, 100, 10, 50, ("min_corrected_stable", 6), 10),
    (True, OR2, UP2, 1000, 1, 100, 5, 15, None, 15),
    (True, OR2, UP2, 100, 1, 100, 5, 15, None, 10),
    (True, OR2, UP2, 100, 1, 100, 10, 30, ("min_corrected_panic", 6), 12),
    (True, OR2, UP2, 100, 0, 100, 0, 5, None, 5),
    (True, OR2, UP2, 100, 0, 100, 0, 5, ("min_corrected_panic", 0), 5),
    (True, OR2, UP2, 1000, 1, 100, 10, 3, None, 10),
    (False, OR2, UP2, 1000, 8, 20, 5, 5, None, 8),
    (False, OR2, UP2, 1000, 1, 10, 15, 15, None, 10),
]


@pytest.mark.parametrize(
    ("panic", "down", "up", "panic_pct", "low", "high", "current", "recommended", "seed", "expected"),
    CASES,
    ids=[f"row{i + 1}" for i in range(len(CASES))],
)
def test_correction_table(
    panic: bool,
    down: tuple[int, int, str],
    up: tuple[int, int, str],
    panic_pct: int,
    low: int,
    high: int,
    current: int,
    recommended: int,
    seed: tuple[str, int] | None,
    expected: int,
) -> None:
    history = History.uniform(NEVER)
    if seed is not None:
        window, value = seed
        getattr(history, window).append(value, NOW)
    result = correct(
        panic=panic,
        history=history,
        behavior=behavior(down, up, panic_pct),
        min_replicas=low,
        max_replicas=high,
        current=current,
        recommended=recommended,
        now=NOW,
    )
    assert result == expected


def test_unset_instances_and_percent_use_crd_defaults() -> None:
    """Kthena's last case: a scaleDown written without instances/percent reads 1 and 100."""
    resolved = resolve_behavior({"scaleDown": {"selectPolicy": "Or"}, "scaleUp": {"stablePolicy": {}}})
    assert (resolved.scale_down.instances, resolved.scale_down.percent) == (1, 100)
    history = History.uniform(NEVER)
    kwargs = {"min_replicas": 1, "max_replicas": 20, "current": 10, "recommended": 5, "now": NOW}
    assert correct(panic=False, history=history, behavior=resolved, **kwargs) == 5  # type: ignore[arg-type]


def test_empty_behavior_gets_the_webhook_defaults() -> None:
    """§7.9 mutator: scaleDown (0, 100%, 1m, 5m), stable (4, 100%, 1m, 0s), panic off."""
    assert resolve_behavior(None) == resolve_behavior({}) == WEBHOOK_BEHAVIOR
    assert WEBHOOK_BEHAVIOR.scale_down == StepPolicy(0, 100, 60.0, "Or", 300.0)
    assert WEBHOOK_BEHAVIOR.scale_up == StepPolicy(4, 100, 60.0, "Or", 0.0)
    assert (WEBHOOK_BEHAVIOR.panic.percent, WEBHOOK_BEHAVIOR.panic.threshold_percent) == (0, 200)
    assert WEBHOOK_BEHAVIOR.panic.hold == 0


def test_fully_specified_behavior_is_kept() -> None:
    raw = {
        "scaleDown": {
            "instances": 2, "percent": 50, "period": "30s", "selectPolicy": "And", "stabilizationWindow": "2m"
        },
        "scaleUp": {
            "stablePolicy": {
                "instances": 3, "percent": 200, "period": "10s", "selectPolicy": "Or",
                "stabilizationWindow": "5s",
            },
            "panicPolicy": {
                "percent": 500, "period": "5s", "panicThresholdPercent": 150, "panicModeHold": "1m"
            },
        },
    }  # fmt: skip
    resolved = resolve_behavior(raw)
    assert resolved.scale_down == StepPolicy(2, 50, 30.0, "And", 120.0)
    assert resolved.scale_up == StepPolicy(3, 200, 10.0, "Or", 5.0)
    assert resolved.panic == PanicSettings(500, 5.0, 150, 60.0)


def test_partial_behavior_fills_windows_and_crd_defaults() -> None:
    """Spec §6.8: writing panicPolicy {hold 5m, period 10s} gives percent 1000 and threshold 200."""
    resolved = resolve_behavior(
        {"scaleDown": {"period": "1m"}, "scaleUp": {"panicPolicy": {"panicModeHold": "5m", "period": "10s"}}}
    )
    assert resolved.scale_down.stabilization_window == 300.0
    assert resolved.scale_up == WEBHOOK_BEHAVIOR.scale_up
    assert resolved.panic == PanicSettings(1000, 10.0, 200, 300.0)


def test_panic_enters_on_replica_ratio_and_holds() -> None:
    state = ScalingState(
        resolve_behavior({"scaleUp": {"panicPolicy": {"period": "10s", "panicModeHold": "30s"}}})
    )
    first = state.step(recommended=8, current=2, min_replicas=1, max_replicas=100, now=0.0)
    assert first.panic  # 8*100 >= 2*200
    assert first.corrected == 8  # panic percent 1000 lets it through
    calm = state.step(recommended=9, current=8, min_replicas=1, max_replicas=100, now=10.0)
    assert calm.panic  # still held
    assert not state.in_panic(41.0)


def test_zero_hold_disables_panic() -> None:
    state = ScalingState(WEBHOOK_BEHAVIOR)
    result = state.step(recommended=40, current=2, min_replicas=1, max_replicas=100, now=0.0)
    assert not result.panic
    assert result.corrected == 6  # stable scale-up: max(2+4, 2+2) = 6
