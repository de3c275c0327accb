"""The autoscaler's control loop: plans from the view, one decider per plan, writes, status, Events.

Like Kthena, cycles are timer-driven (every sync period, measured from the end of the previous
one); unlike Kthena, each policy is evaluated concurrently with its own scrape timeouts (no shared
3 s budget starving later policies), a policy edit is acted on at once, and a replica decides only
for the policies whose lease it holds, so several replicas never fight over a target.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from ferry_schemas.autoscaling import Demand
from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.conditions import now_rfc3339
from ferry_schemas.labels import MS_NAME, WORKLOAD_API_VERSION
from ferry_schemas.runtime.events import EventRecorder, EventType
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.view import ObjectView
from nats.aio.msg import Msg
from opentelemetry import trace
from pydantic import ValidationError

from ferry_autoscaler.kube import AutoscalerApi
from ferry_autoscaler.leases import DeciderLeases
from ferry_autoscaler.metrics import CYCLE_SECONDS, CYCLES, DEMAND, LEASES_HELD, SCALE_WRITES, SKIPPED
from ferry_autoscaler.policies import Broken, Owner, Plan, ServingRef, plan_for_binding, plan_for_policy
from ferry_autoscaler.scaler import Outcome, Scaler, Write
from ferry_autoscaler.state_store import StateStore
from ferry_autoscaler.status import compose_status, decision_text, same_status

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_autoscaler")

SCALE_REASONS = ("SuccessfulRescale", "ScaledFromZero", "FailedRescale")
POLICY_RESOURCES = (Resource.AUTOSCALING_POLICIES.value, Resource.AUTOSCALING_POLICY_BINDINGS.value)


def read_plans(view: ObjectView) -> list[Plan | Broken]:
    """Every current-API policy and every binding, as plans (or why they cannot be acted on)."""
    plans: list[Plan | Broken] = []
    for policy in view.all(Resource.AUTOSCALING_POLICIES):
        plan = plan_for_policy(policy)
        if plan is not None:
            plans.append(plan)
    for binding in view.all(Resource.AUTOSCALING_POLICY_BINDINGS):
        meta = binding.get("metadata") or {}
        ref = ((binding.get("spec") or {}).get("policyRef") or {}).get("name") or ""
        named = view.get(Resource.AUTOSCALING_POLICIES, str(meta.get("namespace") or ""), str(ref))
        plans.append(plan_for_binding(binding, named))
    return plans


def serving_labels(serving: Mapping[str, Any]) -> list[dict[str, str]]:
    """Label sets a ModelServing's entry pods will carry (its own labels plus each role's template)."""
    meta = serving.get("metadata") or {}
    base = dict(meta.get("labels") or {}) | {MS_NAME: str(meta.get("name") or "")}
    roles = ((serving.get("spec") or {}).get("template") or {}).get("roles") or []
    sets = [
        base | dict(((r.get("entryTemplate") or {}).get("metadata") or {}).get("labels") or {}) for r in roles
    ]
    return sets or [base]


class Controller:
    def __init__(
        self,
        view: ObjectView,
        scaler: Scaler,
        api: AutoscalerApi,
        leases: DeciderLeases,
        events: EventRecorder,
        store: StateStore,
        workers: int = 8,
    ) -> None:
        self._view = view
        self._events = events
        self._store = store
        self._restored: set[tuple[str, tuple[int, ...]]] = set()
        self._scaler = scaler
        self._api = api
        self._leases = leases
        self._slots = asyncio.Semaphore(workers)
        self._locks: dict[str, asyncio.Lock] = {}
        self._generations: dict[str, int] = {}
        self.kick = asyncio.Event()
        """Set when a policy or binding changed generation: the loop runs a cycle at once."""
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ triggers

    def on_change(self, event: ObjectEvent) -> None:
        if event.resource not in POLICY_RESOURCES:
            return
        key = f"{event.resource}/{event.namespace}/{event.name}"
        generation = -1 if event.deleted else int(event.generation or 0)
        if self._generations.get(key) != generation:
            self._generations[key] = generation
            self.kick.set()
        if event.deleted:
            task = asyncio.get_running_loop().create_task(self._store.delete(key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def on_demand(self, msg: Msg) -> None:
        try:
            demand = Demand.model_validate_json(msg.data)
        except ValidationError as exc:
            DEMAND.labels("invalid").inc()
            log.warning("undecodable demand on %s: %s", msg.subject, exc)
            return
        await self.wake(demand)

    # ------------------------------------------------------------------ cycles

    async def sync_all(self) -> None:
        plans = read_plans(self._view)
        self._scaler.forget({p.owner.key for p in plans})
        await asyncio.gather(*(self._sync_one(p) for p in plans))
        LEASES_HELD.set(self._leases.held)

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _sync_one(self, plan: Plan | Broken) -> None:
        async with self._slots, self._lock(plan.owner.key):
            try:
                if not await self._leases.claim(plan.owner.key):
                    return
                if isinstance(plan, Broken):
                    await self._report_broken(plan)
                    return
                started = time.monotonic()
                with tracer.start_as_current_span(
                    "autoscale cycle",
                    attributes={"ferry.policy": plan.key, "ferry.target": type(plan.target).__name__},
                ) as span:
                    await self._restore(plan)
                    outcome = await self._scaler.cycle(plan, time.time())
                    CYCLES.labels(type(plan.target).__name__).inc()
                    if outcome.skipped:
                        SKIPPED.inc()
                        span.set_attribute("ferry.skipped", outcome.skipped[:256])
                    span.set_attribute("ferry.writes", len(outcome.writes))
                    await self._act(outcome)
                    await self._store.save(plan.key, self._scaler.dump(plan))
                CYCLE_SECONDS.observe(time.monotonic() - started)
            except Exception:
                log.exception("autoscaling %s failed", plan.owner.key)

    async def wake(self, demand: Demand) -> None:
        """Scale every target at zero that would serve ``demand`` to one replica, at once."""
        with tracer.start_as_current_span(
            "autoscale wake", attributes={"ferry.model": demand.model, "ferry.server": demand.server}
        ):
            await self._wake(demand)

    async def _wake(self, demand: Demand) -> None:
        servings = [
            ServingRef(demand.namespace, str((s.get("metadata") or {}).get("name")))
            for s in self._view.list(Resource.MODEL_SERVINGS, demand.namespace)
            if any(
                all(labels.get(k) == v for k, v in demand.selector.items()) for labels in serving_labels(s)
            )
        ]
        woke = False
        for plan in read_plans(self._view):
            if isinstance(plan, Broken):
                continue
            for ref in servings:
                if ref not in plan.servings():
                    continue
                async with self._lock(plan.key):
                    if not self._leases.holds(plan.key) and not await self._leases.claim(plan.key):
                        continue
                    await self._restore(plan)
                    outcome = self._scaler.wake(plan, ref, time.time())
                    if outcome is not None:
                        woke = True
                        why = f"demand for model {demand.model}"
                        await self._act(outcome, reason="ScaledFromZero", why=why)
                        await self._store.save(plan.key, self._scaler.dump(plan))
        DEMAND.labels("woke" if woke else "ignored").inc()

    # ------------------------------------------------------------------ effects

    async def _act(self, outcome: Outcome, *, reason: str = "SuccessfulRescale", why: str = "") -> None:
        owner = outcome.plan.owner
        scaled: set[str] = set()
        failure: tuple[str, str] | None = None
        for write in outcome.writes:
            try:
                await self._write(write)
            except ApiError as exc:
                failure = (
                    "ScaleFailed",
                    f"writing replicas of {write.ref} failed: {exc.status} {exc.reason}",
                )
                self._event(owner, "Warning", "FailedRescale", failure[1])
                continue
            changes = {
                **(write.roles or {}),
                **({"replicas": write.replicas} if write.replicas is not None else {}),
            }
            for name, value in changes.items():
                SCALE_WRITES.labels("up" if value > write.previous.get(name, 0) else "down").inc()
            names = set(write.roles or ()) | {str(write.ref)}
            scaled |= names
            details = "; ".join(decision_text(r) for r in outcome.reports if r.name in names) or why
            message = f"{write.ref}: " + ", ".join(
                f"{name} {write.previous.get(name)} -> {value}" for name, value in changes.items()
            )
            self._event(owner, "Normal", reason, f"{message}; {why or details}")
            log.info("%s %s (%s)", owner.key, message, why or details)
        await self._write_status(outcome, failure, scaled)

    async def _restore(self, plan: Plan) -> None:
        """Once per plan revision in this process: continue from the last decider's saved state."""
        marker = (plan.key, plan.revision)
        if marker in self._restored:
            return
        self._restored.add(marker)
        if self._scaler.has_state(plan):
            return
        data = await self._store.load(plan.key)
        if data is not None and self._scaler.restore(plan, data):
            log.info("%s: continuing the saved scaling windows", plan.key)

    async def _write(self, write: Write) -> None:
        if write.replicas is not None:
            await self._api.scale(write.ref, write.replicas)
        if write.roles:
            cached = self._view.get(Resource.MODEL_SERVINGS, write.ref.namespace, write.ref.name)
            serving = cached if cached is not None else await self._api.get_serving(write.ref)
            await self._api.patch_roles(write.ref, serving, dict(write.roles))

    async def _report_broken(self, broken: Broken) -> None:
        current = self._status(broken.owner.resource, broken.owner.namespace, broken.owner.name)
        error = (broken.error.reason, str(broken.error))
        status = compose_status(broken.owner, None, current, now_rfc3339(), error=error)
        if same_status(current, status):
            return
        self._event(broken.owner, "Warning", broken.error.reason, str(broken.error))
        await self._apply_status(broken.owner, status)

    def _status(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self._view.get(resource, namespace, name) or {}
        return dict(obj.get("status") or {})

    async def _write_status(
        self, outcome: Outcome, failure: tuple[str, str] | None, scaled: set[str]
    ) -> None:
        owner = outcome.plan.owner
        current = self._status(owner.resource, owner.namespace, owner.name)
        status = compose_status(owner, outcome, current, now_rfc3339(), error=failure, scaled=scaled)
        if same_status(current, status):
            return
        if outcome.error and not same_status(
            {"conditions": current.get("conditions")}, {"conditions": status["conditions"]}
        ):
            self._event(owner, "Warning", outcome.error.reason, str(outcome.error))
        await self._apply_status(owner, status)

    async def _apply_status(self, owner: Owner, status: dict[str, Any]) -> None:
        try:
            await self._api.apply_status(owner, status)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("status of %s not written: %s %s", owner.key, exc.status, exc.reason)

    def _event(self, owner: Owner, event_type: EventType, reason: str, message: str) -> None:
        regarding = {
            "apiVersion": WORKLOAD_API_VERSION,
            "kind": owner.kind,
            "namespace": owner.namespace,
            "name": owner.name,
            "uid": owner.uid,
        }
        action = (
            "Scale" if reason in ("SuccessfulRescale", "ScaledFromZero", "FailedRescale") else "Reconcile"
        )
        self._events.record(regarding, reason=reason, action=action, note=message, type=event_type)
