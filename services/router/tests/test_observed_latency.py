"""The router's own latency measures (``ferry_router.state.observed_latency``)."""

from __future__ import annotations

import pytest
from ferry_router.state import observed_latency
from ferry_router.state.observed_latency import WEIGHT, StreamTiming
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(observed_latency, "clock", fake)
    return fake


def endpoint() -> Endpoint:
    return Endpoint(pod=Pod("default", "p", "127.0.0.1", {}, True), port=8000, engine="vllm")


async def ignore(prompt_tokens: int, completion_tokens: int) -> None:
    return None


def send(e: Endpoint) -> StreamTiming:
    e.inflight += 1  # as the proxy does around a timing
    return StreamTiming(e)


def end(e: Endpoint, timing: StreamTiming) -> None:
    timing.ended()
    e.inflight -= 1


async def test_ttft_is_per_request_ahead_and_tpot_per_request_in_flight(clock: Clock) -> None:
    e = endpoint()
    first, second = send(e), send(e)  # the second waits behind the first
    assert e.latency.awaiting_first == 2
    clock.now += 0.2
    first.first_chunk()
    first.first_chunk()  # a later chunk is no first token
    clock.now += 0.2
    second.first_chunk()
    assert e.latency.awaiting_first == 0
    # 0.2 s with nobody ahead, then 0.4 s behind one: 0.2 s per request ahead both times
    assert e.latency.ttft_unit == pytest.approx(0.2)
    assert e.latency.ttft_at == clock.now
    await first.counting(ignore)(10, 11)  # 11 tokens: 10 decode steps
    clock.now += 1.0
    end(e, first)  # 1.2 s for 10 steps with 2 in flight: 0.06 s per request in flight
    assert e.latency.tpot_unit == pytest.approx(0.06)
    await second.counting(ignore)(10, 5)
    end(e, second)  # 1.0 s for 4 steps alone
    assert e.latency.tpot_unit == pytest.approx(0.06 + WEIGHT * (0.25 - 0.06))
    assert e.inflight == 0


async def test_answers_without_a_stream_or_an_end_teach_nothing(clock: Clock) -> None:
    e = endpoint()
    whole = send(e)  # a non-streaming answer: no first chunk is reported
    await whole.counting(ignore)(10, 20)
    clock.now += 1.0
    end(e, whole)
    cut = send(e)  # a stream cut before its usage chunk
    clock.now += 0.1
    cut.first_chunk()
    end(e, cut)
    assert e.latency.awaiting_first == 0
    assert e.latency.ttft_unit == pytest.approx(0.1)  # the cut stream's first token still counts
    assert e.latency.tpot_unit == 0.0
    assert e.latency.tpot_at == 0.0


async def test_usage_reaches_the_wrapped_callback(clock: Clock) -> None:
    seen: list[tuple[int, int]] = []

    async def record(prompt_tokens: int, completion_tokens: int) -> None:
        seen.append((prompt_tokens, completion_tokens))

    timing = send(endpoint())
    await timing.counting(record)(3, 4)
    assert seen == [(3, 4)]
    assert timing.tokens == 4
