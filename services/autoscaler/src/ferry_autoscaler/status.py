"""The status an outcome gives its policy (or binding), and the words that explain a decision.

Kthena writes status for disaggregated targets only; Ferry writes it for every target type and adds
what a user needs to know why: the metrics of the last cycle against their targets, the
recommendation before behaviour, and conditions ``Ready``, ``TargetFound`` and ``ScalingActive``
(False with the reason when no metric had a value, as HPA says ``FailedGetMetrics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ferry_schemas.conditions import condition, merge_condition, without_times

from ferry_autoscaler.algorithm.ratio import format_ratio
from ferry_autoscaler.policies import Disaggregated, Heterogeneous, Homogeneous, Owner
from ferry_autoscaler.scaler import Outcome, UnitReport

JSON = dict[str, Any]
MAX_MESSAGE = 1024


def _condition(kind: str, ok: bool, reason: str, message: str) -> JSON:
    return condition(kind, ok, reason, message[:MAX_MESSAGE])


def merge_conditions(previous: Sequence[Mapping[str, Any]], new: Sequence[JSON], at: str) -> list[JSON]:
    """The ``new`` conditions (and no others), each keeping its ``lastTransitionTime`` unless its
    status flipped."""
    merged = [dict(c) for c in previous]
    for cond in new:
        merged = merge_condition(merged, cond, at=at)
    kinds = {c["type"] for c in new}
    return [c for c in merged if c.get("type") in kinds]


def explain(report: UnitReport) -> str:
    """``vllm:num_requests_waiting=12 (target 4)``; what was missing when nothing was measured."""
    parts = [
        f"{name}={format_ratio(round(value, 6))} (target {format_ratio(report.targets[name])})"
        for name, value in sorted(report.metrics.items())
        if name in report.targets
    ]
    return ", ".join(parts) or "; ".join(report.problems) or "no metrics"


def decision_text(report: UnitReport) -> str:
    line = f"{report.name}: {report.current} -> {report.final}"
    if report.recommended is not None and report.recommended != report.final:
        line += f" (recommended {report.recommended}, limited by bounds/behaviour)"
    if report.panic:
        line += " [panic]"
    metrics = explain(report)
    return f"{line}; {metrics}" if report.metrics or report.problems else line


def _unit_status(report: UnitReport, last_scale: Mapping[str, str], scaled: set[str], at: str) -> JSON:
    status: JSON = {
        "name": report.name,
        "mode": "Panic" if report.panic else "Stable",
        "currentReplicas": report.current,
        "desiredReplicas": report.final,
        "metrics": [
            {
                "name": name,
                **(
                    {"currentValue": format_ratio(round(report.metrics[name], 6))}
                    if name in report.metrics
                    else {}
                ),
                "targetValue": format_ratio(target),
            }
            for name, target in sorted(report.targets.items())
        ],
    }
    if report.recommended is not None:
        status["recommendedReplicas"] = report.recommended
    stamp = at if report.name in scaled else last_scale.get(report.name)
    if stamp:
        status["lastScaleTime"] = stamp
    return status


def _last_scale_times(previous: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    units: list[Mapping[str, Any]] = []
    if previous.get("homogeneousStatus"):
        units.append(previous["homogeneousStatus"])
    units += previous.get("heterogeneousStatus") or []
    units += (previous.get("disaggregatedStatus") or {}).get("roles") or []
    for unit in units:
        if unit.get("name") and unit.get("lastScaleTime"):
            found[str(unit["name"])] = str(unit["lastScaleTime"])
    return found


def compose_status(
    owner: Owner,
    outcome: Outcome | None,
    previous: Mapping[str, Any],
    at: str,
    *,
    error: tuple[str, str] | None = None,
    scaled: set[str] | None = None,
) -> JSON:
    """The whole status the autoscaler owns for ``owner`` after a cycle (or a failure)."""
    scaled = scaled or set()
    status: JSON = {"observedGeneration": owner.generation}
    failure = error or ((outcome.error.reason, str(outcome.error)) if outcome and outcome.error else None)
    target_found = not failure or failure[0] not in ("TargetNotFound", "TargetInvalid")
    conditions = [
        _condition("Ready", False, failure[0], failure[1])
        if failure
        else _condition("Ready", True, "Reconciled", "autoscaling policy reconciled"),
        _condition("TargetFound", True, "TargetFound", "target model serving (and roles) found")
        if target_found
        else condition(
            "TargetFound", False, failure[0] if failure else "TargetInvalid", failure[1] if failure else ""
        ),
    ]
    if outcome is not None and not outcome.error:
        if outcome.skipped:
            conditions.append(_condition("ScalingActive", False, "FailedGetMetrics", outcome.skipped))
        else:
            text = "; ".join(decision_text(r) for r in outcome.reports if r.recommended is not None)
            conditions.append(_condition("ScalingActive", True, "ValidMetricFound", text))
    status["conditions"] = merge_conditions(previous.get("conditions") or [], conditions, at)
    if outcome is None or not outcome.reports:
        return status
    last = _last_scale_times(previous)
    target = outcome.plan.target
    units = [_unit_status(r, last, scaled, at) for r in outcome.reports]
    if isinstance(target, Homogeneous):
        status["homogeneousStatus"] = units[0]
    elif isinstance(target, Heterogeneous):
        status["heterogeneousStatus"] = units
    elif isinstance(target, Disaggregated):
        disaggregated: JSON = {"roles": units}
        if outcome.ratio is not None:
            disaggregated["ratioAdjusted"] = outcome.ratio.adjusted
            if target.ratio is not None:
                disaggregated["ratioStatus"] = {
                    "numeratorRole": target.ratio.numerator,
                    "denominatorRole": target.ratio.denominator,
                    "currentRatio": outcome.ratio.current_ratio,
                }
        status["disaggregatedStatus"] = disaggregated
    return status


def same_status(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Equal for every key the autoscaler sets, ignoring condition timestamps."""
    return all(without_times(current.get(k)) == without_times(v) for k, v in desired.items())
