"""Latency this router measured on the streams it relayed: least-latency's fresh signal.

An engine's TTFT/TPOT histograms describe requests that got a first token (or finished) up to a
reading ago, at whatever queue they met when they arrived: a signal that lags by the TTFT itself,
and one that greedy choice turns into herding (``bench/routing``: least-latency from the engines'
histograms alone gave 0.82-0.98x Random's throughput on the short workload). The router sees each
stream it relays: when it was sent, how many of this router's requests to that engine were still
waiting for a first token ahead of it, when its first chunk came back, and how many tokens it
carried. So per engine it keeps

* **TTFT per request ahead**: a stream's TTFT / (requests awaiting a first token ahead of it + 1),
  since on an engine that prefills what arrives in order, a new request waits behind those;
* **TPOT per request in flight**: a finished stream's TPOT / this router's requests in flight there
  when it ended, since a decode step grows with the batch;

each an exponentially weighted mean over streams (:data:`WEIGHT` per stream), and least-latency
projects them onto the queue a request sent now would meet (``ttft_unit * (awaiting_first + 1)``,
``tpot_unit * (inflight + 1)``). A figure not renewed for :data:`MAX_AGE` seconds is not used (the
engine's histograms are, which also see other routers' traffic): an engine avoided while slow is
tried again once it has drained. Non-streaming answers give no first token and are not sampled.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ferry_router.state.table import Endpoint

WEIGHT = 0.2  # of each new stream in the running means
MAX_AGE = 30.0  # seconds: an older figure is not used
clock = time.monotonic  # the clock of every figure here (a test sets its own)


@dataclass(slots=True)
class ObservedLatency:
    """One engine's latency as this router measured it (see the module docstring)."""

    awaiting_first: int = 0  # this router's requests there that have not had a first chunk yet
    ttft_unit: float = 0.0  # mean TTFT / (requests ahead + 1), seconds; 0: none measured
    tpot_unit: float = 0.0  # mean TPOT / requests in flight, seconds
    ttft_at: float = 0.0  # time.monotonic() of the last TTFT sample
    tpot_at: float = 0.0

    def add_ttft(self, unit: float, now: float) -> None:
        old = self.ttft_unit
        self.ttft_unit = unit if old <= 0 else old + WEIGHT * (unit - old)
        self.ttft_at = now

    def add_tpot(self, unit: float, now: float) -> None:
        old = self.tpot_unit
        self.tpot_unit = unit if old <= 0 else old + WEIGHT * (unit - old)
        self.tpot_at = now


UsageCallback = Callable[[int, int], Awaitable[None]]


class StreamTiming:
    """One attempt of one request on one endpoint: :meth:`first_chunk` when its stream's first chunk
    arrives, :meth:`counting` wraps the usage callback for the completion tokens, :meth:`ended` once
    the attempt is over (always: it releases the request's place in the awaiting count)."""

    __slots__ = ("_endpoint", "ahead", "first", "sent", "tokens")

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        latency = endpoint.latency
        self.ahead = latency.awaiting_first
        latency.awaiting_first += 1
        self.sent = clock()
        self.first = 0.0
        self.tokens = 0

    def first_chunk(self) -> None:
        if self.first:
            return
        self.first = now = clock()
        latency = self._endpoint.latency
        latency.awaiting_first -= 1
        latency.add_ttft((now - self.sent) / (self.ahead + 1), now)

    def counting(self, on_usage: UsageCallback) -> UsageCallback:
        async def counted(prompt_tokens: int, completion_tokens: int) -> None:
            self.tokens = completion_tokens
            await on_usage(prompt_tokens, completion_tokens)

        return counted

    def ended(self) -> None:
        """Call while the request still counts in the endpoint's in-flight count."""
        endpoint = self._endpoint
        if not self.first:
            endpoint.latency.awaiting_first -= 1
            return
        if self.tokens > 1:  # the stream ran to its usage chunk: a whole decode to measure
            now = clock()
            tpot = (now - self.first) / (self.tokens - 1)
            endpoint.latency.add_tpot(tpot / max(endpoint.inflight, 1), now)
