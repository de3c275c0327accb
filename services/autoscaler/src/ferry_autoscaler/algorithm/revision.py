"""Behaviour correction of a recommendation: stabilisation, rate limits, panic (spec §4.2-§4.4).

One :class:`ScalingState` per scaling unit (a target, a role, a heterogeneous total) keeps the
history windows and the panic deadline between cycles; :meth:`ScalingState.step` runs panic
detection, the correction and the recording in Kthena's order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ferry_autoscaler.algorithm.behavior import Behavior, StepPolicy
from ferry_autoscaler.algorithm.windows import (
    LineChartWindow,
    RecordWindow,
    max_line_chart,
    max_records,
    min_line_chart,
    min_records,
)


@dataclass
class History:
    max_recommendation: RecordWindow
    """Scale-down stabilisation: the highest recent recommendation."""
    min_recommendation: RecordWindow
    """Scale-up stabilisation: the lowest recent recommendation."""
    max_corrected: LineChartWindow
    """Scale-down rate limit reference (scaleDown.period)."""
    min_corrected_stable: LineChartWindow
    """Scale-up rate limit reference (scaleUp.stablePolicy.period)."""
    min_corrected_panic: LineChartWindow
    """Panic growth reference (panicPolicy.period)."""

    @classmethod
    def for_behavior(cls, behavior: Behavior) -> History:
        return cls(
            max_recommendation=max_records(behavior.scale_down.stabilization_window),
            min_recommendation=min_records(behavior.scale_up.stabilization_window),
            max_corrected=max_line_chart(behavior.scale_down.period),
            min_corrected_stable=min_line_chart(behavior.scale_up.period),
            min_corrected_panic=min_line_chart(behavior.panic.period),
        )

    @classmethod
    def uniform(cls, length: float) -> History:
        """Every window ``length`` long (tests: "never expire")."""
        return cls(
            max_records(length),
            min_records(length),
            max_line_chart(length),
            min_line_chart(length),
            min_line_chart(length),
        )


def _down_limit(policy: StepPolicy, reference: int) -> float:
    by_instances = reference - policy.instances
    by_percent = reference - reference * policy.percent // 100
    if policy.select_policy == "Or":
        return min(by_instances, by_percent)
    if policy.select_policy == "And":
        return max(by_instances, by_percent)
    return -math.inf


def _up_limit(policy: StepPolicy, reference: int) -> float:
    by_instances = reference + policy.instances
    by_percent = reference + reference * policy.percent // 100
    if policy.select_policy == "Or":
        return max(by_instances, by_percent)
    if policy.select_policy == "And":
        return min(by_instances, by_percent)
    return math.inf


def correct(
    *,
    panic: bool,
    history: History,
    behavior: Behavior,
    min_replicas: int,
    max_replicas: int,
    current: int,
    recommended: int,
    now: float,
) -> int:
    """The corrected replica count for ``recommended`` (``revision.go``)."""
    corrected: float = recommended
    if panic:
        past = history.min_corrected_panic.best(current, now)
        if past is not None and past > 0:
            corrected = min(corrected, past + int(past * behavior.panic.percent / 100))
        corrected = max(corrected, current)
    elif recommended < current:
        stabilized = history.max_recommendation.best(now)
        if stabilized is not None:
            corrected = max(corrected, stabilized)
        past = history.max_corrected.best(current, now)
        if past is not None:
            corrected = max(corrected, _down_limit(behavior.scale_down, past))
        corrected = min(corrected, current)
    elif recommended > current:
        stabilized = history.min_recommendation.best(now)
        if stabilized is not None:
            corrected = min(corrected, stabilized)
        past = history.min_corrected_stable.best(current, now)
        if past is not None:
            corrected = min(corrected, _up_limit(behavior.scale_up, past))
        corrected = max(corrected, current)
    return int(min(max(corrected, min_replicas), max_replicas))


@dataclass
class StepResult:
    recommended: int
    corrected: int
    panic: bool
    """In panic mode after this cycle."""


@dataclass
class ScalingState:
    """History and panic deadline of one scaling unit; rebuilt when the policy generation changes."""

    behavior: Behavior
    history: History = field(init=False)
    panic_ends_at: float = 0.0

    def __post_init__(self) -> None:
        self.history = History.for_behavior(self.behavior)

    def in_panic(self, now: float) -> bool:
        return self.behavior.panic.hold > 0 and now <= self.panic_ends_at

    def step(
        self, *, recommended: int, current: int, min_replicas: int, max_replicas: int, now: float
    ) -> StepResult:
        panic = self.in_panic(now)
        threshold = self.behavior.panic.threshold_percent
        refresh = threshold is not None and recommended * 100 >= current * threshold
        if refresh:
            panic = self.behavior.panic.hold > 0
        corrected = correct(
            panic=panic,
            history=self.history,
            behavior=self.behavior,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            current=current,
            recommended=recommended,
            now=now,
        )
        self.record(recommended, corrected, now)
        if refresh:
            hold = self.behavior.panic.hold
            self.panic_ends_at = now + hold if hold > 0 else 0.0
        return StepResult(recommended, corrected, self.in_panic(now))

    def dump(self) -> dict[str, Any]:
        """The windows and the panic deadline as JSON (times are wall-clock seconds)."""
        h = self.history
        return {
            "panicEndsAt": self.panic_ends_at,
            "maxRecommendation": h.max_recommendation.dump(),
            "minRecommendation": h.min_recommendation.dump(),
            "maxCorrected": h.max_corrected.dump(),
            "minCorrectedStable": h.min_corrected_stable.dump(),
            "minCorrectedPanic": h.min_corrected_panic.dump(),
        }

    def load(self, data: dict[str, Any]) -> None:
        h = self.history
        self.panic_ends_at = float(data.get("panicEndsAt") or 0.0)
        h.max_recommendation.load(data.get("maxRecommendation") or [])
        h.min_recommendation.load(data.get("minRecommendation") or [])
        h.max_corrected.load(data.get("maxCorrected") or {})
        h.min_corrected_stable.load(data.get("minCorrectedStable") or {})
        h.min_corrected_panic.load(data.get("minCorrectedPanic") or {})

    def record(self, recommended: int, corrected: int, now: float) -> None:
        self.history.max_recommendation.append(recommended, now)
        self.history.min_recommendation.append(recommended, now)
        self.history.max_corrected.append(corrected, now)
        self.history.min_corrected_stable.append(corrected, now)
        self.history.min_corrected_panic.append(corrected, now)
