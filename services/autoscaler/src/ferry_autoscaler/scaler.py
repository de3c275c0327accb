"""One scaling cycle of one plan: collect, recommend, correct, repair the ratio, decide the writes.

The :class:`Scaler` keeps, per plan, the behaviour state of every scaling unit (a ModelServing, a
role, or a heterogeneous total) and the histogram baselines; both are rebuilt when the plan's
revision (the generations it reads) changes, as in Kthena. It reads ModelServings and pods from the
view and never writes: :class:`Outcome` says what to write and why, the service writes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ferry_schemas.bus import Resource

from ferry_autoscaler.algorithm.optimizer import Backend, OptimizerPlan, aggregate_external
from ferry_autoscaler.algorithm.ratio import RatioResult, enforce_ratio
from ferry_autoscaler.algorithm.recommendation import RecommendationInput, recommend
from ferry_autoscaler.algorithm.revision import ScalingState
from ferry_autoscaler.collector import Collected, HistogramBaselines, MetricCollector
from ferry_autoscaler.policies import (
    Disaggregated,
    Heterogeneous,
    Homogeneous,
    MetricTarget,
    Plan,
    PlanError,
    ServingRef,
    ServingUnit,
)

Obj = dict[str, Any]
Lookup = Callable[[str, str, str], Obj | None]
ListPods = Callable[[str], list[Obj]]


@dataclass(frozen=True)
class Write:
    ref: ServingRef
    replicas: int | None = None
    """New ``spec.replicas`` (written through ``/scale``)."""
    roles: Mapping[str, int] | None = None
    """New ``spec.template.roles[name].replicas`` (one JSON patch)."""
    previous: Mapping[str, int] = field(default_factory=dict)
    """What they were (``"replicas"`` or role names)."""


@dataclass
class UnitReport:
    """What one scaling unit saw and decided (the policy's status shows it)."""

    name: str
    current: int
    recommended: int | None
    final: int
    panic: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    plan: Plan
    writes: list[Write] = field(default_factory=list)
    reports: list[UnitReport] = field(default_factory=list)
    skipped: str | None = None
    """Why nothing was decided this cycle (no metric had a value)."""
    error: PlanError | None = None
    ratio: RatioResult | None = None

    @property
    def target_found(self) -> bool:
        return self.error is None or self.error.reason not in ("TargetNotFound", "TargetInvalid")


def serving_replicas(serving: Obj) -> int:
    value = (serving.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def role_replicas(serving: Obj) -> dict[str, int]:
    roles = ((serving.get("spec") or {}).get("template") or {}).get("roles") or []
    return {str(r.get("name")): 1 if r.get("replicas") is None else int(r["replicas"]) for r in roles}


def _targets(metrics: tuple[MetricTarget, ...]) -> dict[str, float]:
    return {m.name: m.target for m in metrics}


@dataclass
class _PlanState:
    revision: tuple[int, ...]
    units: dict[str, ScalingState] = field(default_factory=dict)
    baselines: HistogramBaselines = field(default_factory=HistogramBaselines)
    optimizer: OptimizerPlan | None = None


class Scaler:
    def __init__(self, collector: MetricCollector, lookup: Lookup, pods: ListPods) -> None:
        self._collector = collector
        self._lookup = lookup
        self._pods = pods
        self._states: dict[str, _PlanState] = {}

    def forget(self, keys_alive: set[str]) -> None:
        """Drop the state of plans that no longer exist."""
        for key in list(self._states):
            if key not in keys_alive:
                del self._states[key]

    def _state(self, plan: Plan) -> _PlanState:
        state = self._states.get(plan.key)
        if state is None or state.revision != plan.revision:
            state = self._states[plan.key] = _PlanState(plan.revision)
        return state

    def has_state(self, plan: Plan) -> bool:
        state = self._states.get(plan.key)
        return state is not None and state.revision == plan.revision

    def dump(self, plan: Plan) -> dict[str, Any]:
        """The plan's behaviour state (every unit's windows and panic deadline) as JSON."""
        state = self._state(plan)
        return {"revision": list(plan.revision), "units": {k: v.dump() for k, v in state.units.items()}}

    def restore(self, plan: Plan, data: dict[str, Any]) -> bool:
        """Continue from a dump written by the previous decider; ignored when the plan changed since."""
        if list(data.get("revision") or []) != list(plan.revision):
            return False
        for unit, dumped in (data.get("units") or {}).items():
            self.unit_state(plan, str(unit)).load(dumped)
        return True

    def unit_state(self, plan: Plan, unit: str) -> ScalingState:
        state = self._state(plan)
        if unit not in state.units:
            state.units[unit] = ScalingState(plan.behavior)
        return state.units[unit]

    def _serving(self, ref: ServingRef) -> Obj:
        serving = self._lookup(Resource.MODEL_SERVINGS, ref.namespace, ref.name)
        if serving is None:
            raise PlanError("TargetNotFound", f"ModelServing {ref} not found")
        return serving

    async def cycle(self, plan: Plan, now: float) -> Outcome:
        outcome = Outcome(plan)
        try:
            if isinstance(plan.target, Homogeneous):
                await self._homogeneous(plan, plan.target.unit, outcome, now)
            elif isinstance(plan.target, Heterogeneous):
                await self._heterogeneous(plan, plan.target, outcome, now)
            else:
                await self._disaggregated(plan, plan.target, outcome, now)
        except PlanError as exc:
            outcome.error = exc
        return outcome

    async def _collect(self, plan: Plan, ref: ServingRef, metrics: tuple[MetricTarget, ...], role: str | None,
                       now: float) -> Collected:  # fmt: skip
        return await self._collector.collect(
            self._pods(ref.namespace), ref, metrics, role=role, baselines=self._state(plan).baselines, now=now
        )

    def _current(self, unit: ServingUnit) -> int:
        serving = self._serving(unit.ref)
        if unit.role is None:
            return serving_replicas(serving)
        roles = role_replicas(serving)
        if unit.role not in roles:
            raise PlanError("TargetInvalid", f"role {unit.role!r} not found in ModelServing {unit.ref}")
        return roles[unit.role]

    async def _homogeneous(self, plan: Plan, unit: ServingUnit, outcome: Outcome, now: float) -> None:
        current = self._current(unit)
        collected = await self._collect(plan, unit.ref, unit.metrics, unit.role, now)
        targets = _targets(unit.metrics)
        recommended = recommend(
            RecommendationInput(
                unit.min_replicas, unit.max_replicas, current, plan.tolerance, targets,
                collected.unready, [collected.ready], collected.external,
            )
        )  # fmt: skip
        report = UnitReport(
            str(unit.ref), current, recommended, current, False, collected.values, targets, collected.problems
        )
        outcome.reports.append(report)
        if recommended is None:
            outcome.skipped = "; ".join(collected.problems) or "no metric had a value"
            return
        step = self.unit_state(plan, str(unit.ref)).step(
            recommended=recommended, current=current,
            min_replicas=unit.min_replicas, max_replicas=unit.max_replicas, now=now,
        )  # fmt: skip
        report.final, report.panic = step.corrected, step.panic
        if step.corrected != current:
            if unit.role is None:
                outcome.writes.append(
                    Write(unit.ref, replicas=step.corrected, previous={"replicas": current})
                )
            else:
                outcome.writes.append(
                    Write(unit.ref, roles={unit.role: step.corrected}, previous={unit.role: current})
                )

    async def _heterogeneous(self, plan: Plan, target: Heterogeneous, outcome: Outcome, now: float) -> None:
        state = self._state(plan)
        if state.optimizer is None:
            backends = [Backend(str(u.ref), u.cost, u.min_replicas, u.max_replicas) for u in target.units]
            state.optimizer = OptimizerPlan.build(backends, target.expansion_rate_percent)
        optimizer = state.optimizer
        currents = {str(u.ref): self._current(u) for u in target.units}
        ready: list[dict[str, float]] = []
        unready = 0
        external: dict[str, list[tuple[float, int]]] = {}
        problems: list[str] = []
        measured: dict[str, dict[str, float]] = {}
        for unit in target.units:
            collected = await self._collect(plan, unit.ref, unit.metrics, unit.role, now)
            ready.append(collected.ready)
            unready += collected.unready
            problems += [f"{unit.ref}: {p}" for p in collected.problems]
            for name, value in collected.external.items():
                external.setdefault(name, []).append((value, currents[str(unit.ref)]))
            measured[str(unit.ref)] = collected.values
        targets = _targets(target.units[0].metrics) if target.units else {}
        total = sum(currents.values())
        aggregated = {name: aggregate_external(name, samples) for name, samples in external.items()}
        recommended = recommend(
            RecommendationInput(
                optimizer.min_total, optimizer.max_total, total, plan.tolerance, targets, unready, ready,
                aggregated,
            )
        )  # fmt: skip
        # The total's metrics as the recommendation weighs them: pod metrics summed over every
        # backend's ready pods, external ones aggregated (§4.5); each backend shows its own below.
        metrics = {
            name: sum(r[name] for r in ready if name in r)
            for name in targets
            if any(name in r for r in ready)
        }
        report = UnitReport(
            "total", total, recommended, total, False, metrics | aggregated, targets, problems
        )
        outcome.reports.append(report)
        if recommended is None:
            outcome.skipped = "; ".join(problems) or "no metric had a value"
            return
        step = self.unit_state(plan, "total").step(
            recommended=recommended, current=total,
            min_replicas=optimizer.min_total, max_replicas=optimizer.max_total, now=now,
        )  # fmt: skip
        report.final, report.panic = step.corrected, step.panic
        split = optimizer.split(step.corrected)
        for unit in target.units:
            key = str(unit.ref)
            outcome.reports.append(
                UnitReport(key, currents[key], None, split[key], metrics=measured[key], targets=targets)
            )
            if split[key] != currents[key]:
                outcome.writes.append(
                    Write(unit.ref, replicas=split[key], previous={"replicas": currents[key]})
                )

    async def _disaggregated(self, plan: Plan, target: Disaggregated, outcome: Outcome, now: float) -> None:
        serving = self._serving(target.ref)
        currents = role_replicas(serving)
        missing = [r.name for r in target.roles if r.name not in currents]
        if missing:
            raise PlanError("TargetInvalid", f"roles {missing} not found in ModelServing {target.ref}")
        corrected: dict[str, int] = {}
        for role in target.roles:
            current = currents[role.name]
            if role.fixed:
                corrected[role.name] = role.min_replicas
                outcome.reports.append(UnitReport(role.name, current, role.min_replicas, role.min_replicas))
                continue
            collected = await self._collect(plan, target.ref, role.metrics, role.name, now)
            targets = _targets(role.metrics)
            recommended = recommend(
                RecommendationInput(
                    role.min_replicas, role.max_replicas, current, plan.tolerance, targets,
                    collected.unready, [collected.ready], collected.external,
                )
            )  # fmt: skip
            report = UnitReport(
                role.name, current, recommended, current, False, collected.values, targets, collected.problems
            )
            outcome.reports.append(report)
            if recommended is None:
                outcome.skipped = f"role {role.name}: " + (
                    "; ".join(collected.problems) or "no metric had a value"
                )
                return
            step = self.unit_state(plan, role.name).step(
                recommended=recommended, current=current,
                min_replicas=role.min_replicas, max_replicas=role.max_replicas, now=now,
            )  # fmt: skip
            report.panic = step.panic
            corrected[role.name] = step.corrected
        self._finish_roles(target, currents, corrected, outcome)

    def _finish_roles(
        self, target: Disaggregated, currents: Mapping[str, int], wanted: Mapping[str, int], outcome: Outcome
    ) -> None:
        bounds = {r.name: r.bounds for r in target.roles}
        result = enforce_ratio(wanted, bounds, target.ratio)
        outcome.ratio = result
        for report in outcome.reports:
            if report.name in result.replicas:
                report.final = result.replicas[report.name]
        changed = {name: n for name, n in result.replicas.items() if n != currents[name]}
        if changed:
            previous = {name: currents[name] for name in changed}
            outcome.writes.append(Write(target.ref, roles=changed, previous=previous))

    def wake(self, plan: Plan, ref: ServingRef, now: float) -> Outcome | None:
        """Demand for a scaled-to-zero target: 0 → 1 at once (within bounds), windows bypassed.

        The decision is recorded in the unit's history so the next cycles' rate limits and
        stabilisation start from it. ``None`` when the target is not at zero.
        """
        outcome = Outcome(plan)
        try:
            if isinstance(plan.target, Disaggregated):
                serving = self._serving(plan.target.ref)
                currents = role_replicas(serving)
                if any(currents.get(r.name, 1) > 0 for r in plan.target.roles if not r.fixed):
                    return None
                wanted = {r.name: max(1, r.min_replicas) for r in plan.target.roles}
                for name, value in wanted.items():
                    self.unit_state(plan, name).record(value, value, now)
                    outcome.reports.append(UnitReport(name, currents.get(name, 0), value, value))
                self._finish_roles(plan.target, currents, wanted, outcome)
                return outcome if outcome.writes else None
            units = [plan.target.unit] if isinstance(plan.target, Homogeneous) else list(plan.target.units)
            for unit in units:
                if unit.ref != ref or self._current(unit) != 0:
                    continue
                value = min(max(1, unit.min_replicas), unit.max_replicas)
                key = str(unit.ref) if isinstance(plan.target, Homogeneous) else "total"
                self.unit_state(plan, key).record(value, value, now)
                outcome.reports.append(UnitReport(str(unit.ref), 0, value, value))
                if unit.role is None:
                    outcome.writes.append(Write(unit.ref, replicas=value, previous={"replicas": 0}))
                else:
                    outcome.writes.append(Write(unit.ref, roles={unit.role: value}, previous={unit.role: 0}))
        except PlanError:
            return None
        return outcome if outcome.writes else None
