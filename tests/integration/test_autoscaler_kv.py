"""The autoscaler's KV use on a real nats-server: one decider per policy, and state that outlives it."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from ferry_autoscaler.algorithm.behavior import resolve_behavior
from ferry_autoscaler.algorithm.revision import ScalingState
from ferry_autoscaler.leases import DeciderLeases
from ferry_autoscaler.policies import Plan, plan_for_policy
from ferry_autoscaler.scaler import Scaler
from ferry_autoscaler.state_store import StateStore
from ferry_schemas.runtime.jetstream import key_value
from nats.aio.client import Client as NatsClient
from nats.js.kv import KeyValue

pytestmark = pytest.mark.integration


@pytest.fixture
async def kv(nc: NatsClient) -> KeyValue:
    return await key_value(nc.jetstream(), f"test_autoscaler_{uuid.uuid4().hex[:8]}")


async def test_one_decider_and_takeover_after_the_ttl(kv: KeyValue) -> None:
    first, second = DeciderLeases(kv, "a", ttl=0.6), DeciderLeases(kv, "b", ttl=0.6)
    assert await first.claim("autoscalingpolicies/ns/p.with.dots")
    assert not await second.claim("autoscalingpolicies/ns/p.with.dots")
    assert await first.claim("autoscalingpolicies/ns/p.with.dots")  # renewal
    assert await second.claim("autoscalingpolicies/ns/other")  # policies spread over replicas
    await asyncio.sleep(0.8)  # the TTL is the behaviour under test: "a" stopped renewing
    assert await second.claim("autoscalingpolicies/ns/p.with.dots")
    assert not await first.claim("autoscalingpolicies/ns/p.with.dots")
    await second.release_all()
    assert await first.claim("autoscalingpolicies/ns/p.with.dots")


SCALE_DOWN = {"scaleDown": {"stabilizationWindow": "5m", "period": "1m"}}


def _plan() -> Plan:
    policy = {
        "metadata": {"namespace": "ns", "name": "p", "generation": 2},
        "spec": {
            "metrics": [{"name": "load", "targetValue": 1}],
            "behavior": SCALE_DOWN,
            "homogeneousTarget": {
                "minReplicas": 1,
                "maxReplicas": 9,
                "target": {"targetRef": {"name": "ms"}},
            },
        },
    }
    plan = plan_for_policy(policy)
    assert isinstance(plan, Plan)
    return plan


async def test_a_new_decider_continues_the_stabilisation_window(kv: KeyValue) -> None:
    plan = _plan()
    store = StateStore(kv)
    before = Scaler(None, lambda *_: None, lambda _: [])  # type: ignore[arg-type]
    state = before.unit_state(plan, "ns/ms")
    assert state.step(recommended=8, current=2, min_replicas=1, max_replicas=9, now=1000.0).corrected == 6
    await store.save(plan.key, before.dump(plan))

    after = Scaler(None, lambda *_: None, lambda _: [])  # type: ignore[arg-type]
    data = await store.load(plan.key)
    assert data is not None
    assert after.restore(plan, data)
    # Load drops: the 5-minute scale-down window still holds the recommendation 8 seen 60 s ago.
    result = after.unit_state(plan, "ns/ms").step(
        recommended=1, current=6, min_replicas=1, max_replicas=9, now=1060.0
    )
    assert result.corrected == 6
    fresh = ScalingState(resolve_behavior(SCALE_DOWN))  # what Kthena does after a restart
    assert fresh.step(recommended=1, current=6, min_replicas=1, max_replicas=9, now=1060.0).corrected == 1
    await store.delete(plan.key)
    assert await store.load(plan.key) is None


async def test_a_changed_plan_ignores_the_saved_state(kv: KeyValue) -> None:
    plan = _plan()
    store = StateStore(kv)
    scaler = Scaler(None, lambda *_: None, lambda _: [])  # type: ignore[arg-type]
    scaler.unit_state(plan, "ns/ms").record(5, 5, 1000.0)
    await store.save(plan.key, scaler.dump(plan))
    edited = Plan(plan.owner, (3,), plan.tolerance, plan.behavior, plan.target)
    data = await store.load(plan.key)
    assert data is not None
    assert not Scaler(None, lambda *_: None, lambda _: []).restore(edited, data)  # type: ignore[arg-type]
