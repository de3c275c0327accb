"""The engine simulator: vLLM's continuous-batching loop with a prefix-cached KV pool.

One asyncio task runs engine steps. A step, like vLLM v1's scheduler, first serves the running
requests (decodes take one token each, unfinished prefills a chunk of the token budget), then
admits waiting requests while ``max_num_seqs`` and the budget allow: an admitted request takes
its longest cached prefix and fresh blocks for the rest of its prompt; when the pool has no room
it waits (head of line). A decode that needs a block when none is free preempts the newest
running request (recompute, as vLLM v1 does), and a step that preempted admits no waiting request
(vLLM v1's rule: admitting would preempt what was just preempted). The step lasts
``profile.step_time(prefill tokens, KV read, prefill attention pairs)`` simulated seconds, i.e. ``time_scale``
times that in wall time. Then newly filled full blocks -- of the prompt and, as vLLM v1 does, of
generated tokens, hashed with the LoRA adapter's name as an extra key -- are cached
(``BlockStored``, with the adapter's ``lora_id``), tokens are handed out, finished requests free
their blocks, and the step's KV events are published. A preempted request that comes back finds
its own blocks (prompt and output) cached, unless they were evicted meanwhile.

Times reported (TTFT, TPOT, latencies in ``/metrics``) are simulated seconds: wall time divided by
``time_scale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ferry_schemas.sim_tokenizer import VOCAB_SIZE

from ferry_mock_engine.kv_events import KVEvent
from ferry_mock_engine.kvcache import Block, BlockPool, extend_block_hashes, lora_key, prompt_block_hashes
from ferry_mock_engine.profiles import Profile, attended_pairs

log = logging.getLogger(__name__)

END = -1
MAX_LAG = 1.0  # wall seconds


@dataclass(eq=False)
class SimRequest:
    """One request inside the simulator; ``tokens`` delivers output token indexes, then ``END``."""

    id: str
    prompt: list[int]
    max_output: int
    hashes: list[int]  # of the full blocks known so far (the prompt's, then generated ones)
    arrival: float  # simulated seconds
    precomputed: bool = False  # a decode instance that received the prompt's KV from a prefill
    lora: str | None = None
    lora_id: int | None = None  # the adapter's id on this engine (vLLM's lora_int_id)
    output_ids: list[int] = field(default_factory=list)  # the ids of the tokens it will generate
    tokens: asyncio.Queue[int] = field(default_factory=asyncio.Queue)
    blocks: list[Block] = field(default_factory=list)
    computed: int = 0  # prompt tokens whose KV exists (more after a preemption that hit its output)
    registered: int = 0  # full blocks already in the cache (hit or stored)
    output: int = 0
    hit_tokens: int = 0
    prefill_time: float = 0.0  # simulated seconds of the steps that prefilled this request
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    is_running: bool = False  # in ``Simulator.running`` (an O(1) membership test)


@dataclass
class SimStats:
    prefix_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_hits: int = 0  # of which were cached
    preemptions: int = 0
    steps: int = 0


class Simulator:
    def __init__(
        self,
        profile: Profile,
        pool: BlockPool,
        *,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        time_scale: float = 1.0,
        publish: Callable[[list[KVEvent]], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        """``clock`` (simulated seconds) replaces the scaled wall clock when a caller drives the steps
        itself (``step_plan``/``step_finish``) in virtual time, as ``bench/routing/offline.py`` does."""
        if time_scale <= 0:
            raise ValueError("time scale must be positive")
        self.profile = profile
        self.pool = pool
        self.max_num_seqs = max(1, max_num_seqs)
        self.max_num_batched_tokens = max(1, max_num_batched_tokens)
        self.time_scale = time_scale
        self.publish = publish or (lambda events: None)
        self.running: list[SimRequest] = []
        self.waiting: deque[SimRequest] = deque()
        self.stats = SimStats()
        self._prefills: list[tuple[SimRequest, int]] = []
        self._decodes: list[SimRequest] = []
        self._duration = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()
        self._clock = clock

    # ------------------------------------------------------------------ clock and lifecycle
    def now(self) -> float:
        """Simulated seconds since start."""
        if self._clock is not None:
            return self._clock()
        return (time.monotonic() - self._t0) / self.time_scale

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="engine-simulator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def request(
        self,
        request_id: str,
        prompt: list[int],
        max_output: int,
        *,
        precomputed: bool = False,
        lora: str | None = None,
        lora_id: int | None = None,
    ) -> SimRequest:
        """A request of ``prompt`` token ids; its generated tokens get ids unique to it (sampled text
        is rarely another request's), which only its own recompute after a preemption can hit."""
        size = self.pool.block_size
        hashes = prompt_block_hashes(prompt, size, extra=lora_key(lora)) if self.pool.enable_caching else []
        salt = zlib.crc32(request_id.encode())
        output_ids = [zlib.crc32(i.to_bytes(4, "big"), salt) % VOCAB_SIZE for i in range(max_output)]
        return SimRequest(
            request_id, prompt, max_output, hashes, self.now(), precomputed=precomputed, lora=lora,
            lora_id=lora_id, output_ids=output_ids,
        )  # fmt: skip

    def submit(self, req: SimRequest) -> None:
        self.waiting.append(req)
        self._wake.set()

    def cancel(self, req: SimRequest) -> None:
        """The client went away: free the request at the next step."""
        if not req.finished:
            req.cancelled = True
            self._wake.set()

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                deadline = loop.time()
            try:
                duration = self.step_plan()
            except Exception:  # a bug here must not wedge every request
                log.exception("simulator step failed")
                raise
            if duration is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            # A step that started late (the host was busy) is caught up on by the next ones, up to
            # MAX_LAG, so the simulated GPU keeps its pace when the machine is loaded.
            deadline = max(deadline, loop.time() - MAX_LAG) + duration * self.time_scale
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.step_finish()

    def _blocks_for(self, tokens: int) -> int:
        return math.ceil(tokens / self.pool.block_size)

    def _run(self, req: SimRequest) -> None:
        self.running.append(req)
        req.is_running = True

    def _unrun(self, req: SimRequest) -> None:
        if req.is_running:
            self.running.remove(req)
            req.is_running = False

    def _drop(self, req: SimRequest) -> None:
        self.pool.release(req.blocks)
        req.blocks = []
        req.finished = True
        req.tokens.put_nowait(END)

    def _preempt(self, req: SimRequest) -> None:
        self.pool.release(req.blocks)
        req.blocks, req.computed, req.registered = [], 0, 0
        self._unrun(req)
        self.waiting.appendleft(req)
        self.stats.preemptions += 1

    def step_plan(self) -> float | None:
        """Choose this step's work; its simulated duration, or ``None`` when nothing can run."""
        for req in [r for r in self.running if r.cancelled]:
            self._unrun(req)
            self._drop(req)
        for req in [r for r in self.waiting if r.cancelled]:
            self.waiting.remove(req)
            req.finished = True
        budget = self.max_num_batched_tokens
        self._prefills, self._decodes = [], []
        context = pairs = 0
        preempted = self.stats.preemptions
        for req in list(self.running):
            if not req.is_running or budget <= 0:
                continue
            if req.computed < len(req.prompt):
                n = min(len(req.prompt) - req.computed, budget)
                self._prefills.append((req, n))
                budget -= n
                context += req.computed + n
                pairs += attended_pairs(req.computed, n)
                continue
            need = self._blocks_for(len(req.prompt) + req.output + 1) - len(req.blocks)
            while need > 0:
                fresh = self.pool.allocate(need)
                if fresh is not None:
                    req.blocks += fresh
                    break
                victim = self.running[-1]
                self._preempt(victim)
                if victim is req:
                    break
            if req.is_running:
                self._decodes.append(req)
                budget -= 1
                context += len(req.prompt) + req.output
        if self.stats.preemptions > preempted and (self._prefills or self._decodes):
            budget = 0  # the pool is oversubscribed: drain it before admitting anyone
        while self.waiting and len(self.running) < self.max_num_seqs and budget > 0:
            req = self.waiting[0]
            if not self._admit(req):
                break
            self.waiting.popleft()
            self._run(req)
            n = min(len(req.prompt) - req.computed, budget)
            self._prefills.append((req, n))
            budget -= n
            context += req.computed + n
            pairs += attended_pairs(req.computed, n)
        if not self._prefills and not self._decodes:
            return None
        prefill_tokens = sum(n for _, n in self._prefills)
        self._duration = self.profile.step_time(prefill_tokens, context, pairs)
        return self._duration

    def _admit(self, req: SimRequest) -> bool:
        size = self.pool.block_size
        known = len(req.prompt) + req.output  # a preempted request comes back with its output
        usable = (known - 1) // size  # at least one token is always computed
        hits = self.pool.cached_prefix(req.hashes[:usable])
        self.pool.touch(hits)
        fresh = self.pool.allocate(max(0, self._blocks_for(known + 1) - len(hits)))
        if fresh is None:
            self.pool.release(hits)
            return False
        req.blocks = hits + fresh
        req.registered = len(hits)
        req.hit_tokens = len(hits) * size
        req.computed = max(req.hit_tokens, len(req.prompt) - 1) if req.precomputed else req.hit_tokens
        self.stats.prefix_queries += known
        self.stats.prefix_hits += req.hit_tokens
        return True

    def _register(self, req: SimRequest, known: int) -> None:
        """Cache the full blocks among the first ``known`` tokens (prompt, then output) not yet cached."""
        size = self.pool.block_size
        full = min(known // size, len(req.blocks)) if self.pool.enable_caching else 0
        if full <= req.registered:
            return
        tokens = req.prompt
        if full * size > len(req.prompt):
            tokens = req.prompt + req.output_ids[: full * size - len(req.prompt)]
        extend_block_hashes(req.hashes, tokens, size, full, extra=lora_key(req.lora))
        a = req.registered
        parent = req.hashes[a - 1] if a else None
        self.pool.cache(
            req.blocks[a:full], req.hashes[a:full], parent, tokens[a * size : full * size], req.lora_id
        )
        req.registered = full

    def step_finish(self) -> None:
        """Apply the planned step: cache computed blocks, hand out tokens, free finished requests."""
        now = self.now()
        self.stats.steps += 1
        size = self.pool.block_size
        emitting: list[SimRequest] = []
        for req, n in self._prefills:
            if not req.is_running:
                continue
            req.computed += n
            req.prefill_time += self._duration
            self._register(req, min(req.computed, len(req.prompt)))
            if req.computed >= len(req.prompt):
                emitting.append(req)
        emitting += [r for r in self._decodes if r.is_running]
        for req in emitting:
            if req.output >= req.max_output:
                self._finish(req)
                continue
            req.output += 1
            if req.first_token_at is None:
                req.first_token_at = now
            req.token_times.append(now)
            req.tokens.put_nowait(req.output - 1)
            if (len(req.prompt) + req.output) % size == 0:  # a block of output just filled
                self._register(req, len(req.prompt) + req.output)
            if req.output >= req.max_output:
                self._finish(req)
        self._prefills, self._decodes = [], []
        self.publish(self.pool.take_events())

    def _finish(self, req: SimRequest) -> None:
        self._unrun(req)
        self._drop(req)
