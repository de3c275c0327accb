"""The Event recorder's yield policy and aggregation (unit: the API connection is a fake that records
the requests; the real writes are exercised by tests/integration/test_events.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from ferry_schemas.runtime.events import EventRecorder
from ferry_schemas.runtime.kubeconn import KubeConnection
from ferry_schemas.runtime.workqueue import WorkQueue

OWNER = {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "ns", "name": "owner", "uid": "u-1"}


class FakeApi:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any], float]] = []
        self._arrived = asyncio.Condition()

    async def send(self, method: str, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.sent.append((method, path, body, time.monotonic()))
        async with self._arrived:
            self._arrived.notify_all()
        return {}

    async def wait_for(self, writes: int) -> None:
        async with asyncio.timeout(5.0), self._arrived:
            await self._arrived.wait_for(lambda: len(self.sent) >= writes)


def recorder(api: FakeApi, **options: Any) -> EventRecorder:
    return EventRecorder(cast(KubeConnection, api), "ferry/test", poll=0.01, **options)


async def test_events_are_held_while_busy_and_written_once_idle_for_quiet_seconds() -> None:
    api = FakeApi()
    idle_since: float | None = None  # None: the work queue has work

    def idle_for() -> float:
        return 0.0 if idle_since is None else time.monotonic() - idle_since

    events = recorder(api, max_delay=60.0, quiet=0.2)
    events.start(idle_for=idle_for)
    try:
        events.record(OWNER, reason="Created", action="Create", note="a")
        events.record(OWNER, reason="Pruned", action="Delete", note="b")
        await asyncio.sleep(0.1)  # ten polls of the writer
        assert api.sent == []
        idle_since = time.monotonic()
        await api.wait_for(2)
        assert api.sent[0][3] - idle_since >= 0.2  # a pause shorter than quiet is not idle
        assert [body["reason"] for _, _, body, _ in api.sent] == ["Created", "Pruned"]  # oldest first
    finally:
        await events.stop()


async def test_an_event_is_written_by_the_deadline_when_never_idle() -> None:
    api = FakeApi()
    events = recorder(api, max_delay=0.2)
    events.start(idle_for=lambda: 0.0)
    try:
        recorded = time.monotonic()
        events.record(OWNER, reason="Created", action="Create")
        await api.wait_for(1)
        assert api.sent[0][3] - recorded >= 0.2
    finally:
        await events.stop()


async def test_while_busy_at_most_busy_rate_events_per_second_are_written() -> None:
    api = FakeApi()
    events = recorder(api, max_delay=60.0, busy_rate=10.0)
    events.start(idle_for=lambda: 0.0)
    try:
        for reason in ("A", "B", "C"):
            events.record(OWNER, reason=reason, action="Create")
        await api.wait_for(3)
        stamps = [at for *_, at in api.sent]
        assert stamps[2] - stamps[0] >= 0.1  # a token each 0.1 s after the first (0.2; margin for preemption)
    finally:
        await events.stop()


async def test_occurrences_counted_while_held_make_one_event_with_its_series() -> None:
    api, busy = FakeApi(), True
    events = recorder(api, max_delay=60.0, quiet=0.0)
    events.start(idle_for=lambda: 0.0 if busy else 1.0)
    try:
        for note in ("first", "second", "third"):
            events.record(OWNER, reason="Created", action="Create", note=note)
        busy = False
        await api.wait_for(1)
        method, _, body, _ = api.sent[0]
        assert method == "POST"
        assert body["note"] == "first"
        assert body["series"]["count"] == 3
        # one more occurrence once written: the series is counted in memory, patched by the flush
        events.record(OWNER, reason="Created", action="Create", note="fourth")
    finally:
        await events.stop()
    assert [(m, b["series"]["count"]) for m, _, b, _ in api.sent[1:]] == [("PATCH", 4)]


async def test_a_single_occurrence_is_created_without_a_series_and_the_second_patches_it() -> None:
    api = FakeApi()
    events = recorder(api)
    events.start()  # never busy: written at once
    try:
        events.record(OWNER, reason="Created", action="Create")
        await api.wait_for(1)
        events.record(OWNER, reason="Created", action="Create")
        await api.wait_for(2)
    finally:
        await events.stop()
    assert "series" not in api.sent[0][2]
    assert (api.sent[1][0], api.sent[1][2]["series"]["count"]) == ("PATCH", 2)


async def test_stop_writes_what_is_held_even_while_busy() -> None:
    api = FakeApi()
    events = recorder(api, max_delay=60.0)
    events.start(idle_for=lambda: 0.0)
    events.record(OWNER, reason="Created", action="Create")
    events.record(OWNER, reason="Failed", action="Reconcile", type="Warning")
    started = time.monotonic()
    await events.stop(drain=2.0)
    assert time.monotonic() - started < 2.0
    assert [body["reason"] for _, _, body, _ in api.sent] == ["Created", "Failed"]


async def test_an_event_recorded_by_a_reconcile_waits_for_the_work_queue_to_be_done() -> None:
    api, release = FakeApi(), asyncio.Event()
    events = recorder(api, max_delay=60.0, quiet=0.1)

    async def reconcile(key: str, _ctx: object) -> None:
        events.record({**OWNER, "name": key, "uid": key}, reason="Created", action="Create")
        await release.wait()

    queue: WorkQueue[str] = WorkQueue("t", reconcile, workers=1)
    events.start(idle_for=queue.idle_for)
    try:
        queue.add("a")
        queue.add("b")  # waits for the one worker: work too
        await asyncio.sleep(0.2)  # twice quiet, twenty polls of the writer
        assert api.sent == []
        release.set()
        await api.wait_for(1)
        assert queue.idle_for() >= 0.1
        await api.wait_for(2)
    finally:
        await queue.stop()
        await events.stop()
