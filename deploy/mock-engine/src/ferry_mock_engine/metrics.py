"""The engine's real load and the Prometheus metrics that expose it under vLLM (or SGLang) names.

Gauges are computed at scrape time from :class:`Load`, so ``/metrics`` always shows what is
running right now; histograms record every request's TTFT and every inter-token gap. Each engine
has its own registry, so several engines can live in one test process. The instruments are plain
lock-free objects: one event loop both updates and scrapes them, and a lock per token was the
engine's largest cost.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ferry_mock_engine.config import EngineConfig, EngineKind
from ferry_mock_engine.simulator import Simulator

_LATENCY_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip


@dataclass
class Load:
    """Requests admitted (running) or queued (waiting), and KV blocks they hold."""

    running: dict[str, int] = field(default_factory=dict)  # request id -> tokens in the KV cache
    running_loras: dict[str, str] = field(default_factory=dict)  # request id -> adapter name
    waiting: int = 0
    waiting_loras: dict[str, int] = field(default_factory=dict)

    def blocks(self, block_size: int) -> int:
        return sum(math.ceil(tokens / max(1, block_size)) for tokens in self.running.values())


class _LoadCollector(Collector):
    """Gauges read at scrape time: from the simulator when there is one, else from :class:`Load`."""

    def __init__(self, config: EngineConfig, load: Load, sim: Simulator | None) -> None:
        self._config = config
        self._load = load
        self._sim = sim

    def _now(self) -> tuple[int, int, float]:
        if self._sim is not None:
            sim = self._sim
            return len(sim.running), len(sim.waiting), sim.pool.usage
        cfg, load = self._config, self._load
        usage = min(1.0, load.blocks(cfg.block_size) / max(1, cfg.kv_cache_blocks))
        return len(load.running), load.waiting, usage

    def collect(self) -> Iterator[Metric]:
        cfg, load = self._config, self._load
        model = cfg.names[0]
        running, waiting, usage = self._now()
        gauges: list[tuple[str, str, float]]
        if cfg.engine is EngineKind.SGLANG:
            gauges = [
                ("sglang:num_running_reqs", "Running requests.", running),
                ("sglang:num_queue_reqs", "Queued requests.", waiting),
                ("sglang:token_usage", "KV cache token usage (0..1).", usage),
            ]
        else:
            gauges = [
                ("vllm:num_requests_running", "Requests in model execution batches.", running),
                ("vllm:num_requests_waiting", "Requests waiting to be processed.", waiting),
                ("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", usage),
                ("vllm:gpu_cache_usage_perc", "GPU KV-cache usage (pre-v0.10 name).", usage),
            ]
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=["model_name"])
            family.add_metric([model], float(value))
            yield family
        if cfg.engine is EngineKind.VLLM and cfg.enable_lora:
            info = GaugeMetricFamily(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"],
            )
            running_loras = ",".join(sorted(set(load.running_loras.values())))
            waiting_loras = ",".join(sorted(name for name, n in load.waiting_loras.items() if n > 0))
            info.add_metric([str(cfg.max_loras), running_loras, waiting_loras], time.time())
            yield info


class _Histogram:
    """A lock-free histogram: the engine updates and scrapes it from its one event-loop thread."""

    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.counts = [0] * (len(_LATENCY_BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(_LATENCY_BUCKETS, value)] += 1  # buckets are "less or equal"
        self.sum += value

    def family(self, model: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=["model_name"])
        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, _LATENCY_BUCKETS), "+Inf"], self.counts, strict=True):
            cumulative += count
            buckets.append((bound, float(cumulative)))
        family.add_metric([model], buckets, self.sum)
        return family


class _Counter:
    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.doc = doc
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class EngineMetrics(Collector):
    """Registry + instruments for one engine (histograms and counters kept in plain Python objects)."""

    def __init__(self, config: EngineConfig, load: Load, sim: Simulator | None = None) -> None:
        prefix = "sglang" if config.engine is EngineKind.SGLANG else "vllm"
        self._sim = sim
        self._model = config.names[0]
        self.ttft = _Histogram(f"{prefix}:time_to_first_token_seconds", "Time to first token.")
        self._itl = [_Histogram(f"{prefix}:inter_token_latency_seconds", "Inter-token latency.")]
        if prefix == "vllm":
            self._itl.append(_Histogram("vllm:time_per_output_token_seconds", "Time per output token."))
        self.e2e = _Histogram(f"{prefix}:e2e_request_latency_seconds", "End-to-end request latency.")
        self.prompt_tokens = _Counter(f"{prefix}:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = _Counter(f"{prefix}:generation_tokens", "Generation tokens processed.")
        self.request_success = _Counter(f"{prefix}:request_success", "Successfully finished requests.")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_LoadCollector(config, load, sim))
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for histogram in (self.ttft, *self._itl, self.e2e):
            yield histogram.family(self._model)
        for counter, labels in (
            (self.prompt_tokens, ["model_name"]),
            (self.generation_tokens, ["model_name"]),
            (self.request_success, ["model_name", "finished_reason"]),
        ):
            family = CounterMetricFamily(counter.name, counter.doc, labels=labels)
            for values, amount in counter.values.items():
                family.add_metric(list(values), amount)
            yield family
        if self._sim is not None:  # vLLM v1's prefix-cache counters (tokens) and preemptions
            stats = self._sim.stats
            for name, doc, value in (
                ("vllm:prefix_cache_queries", "Prefix-cache queries, in tokens.", stats.prefix_queries),
                ("vllm:prefix_cache_hits", "Prefix-cache hits, in tokens.", stats.prefix_hits),
                ("vllm:num_preemptions", "Cumulative number of preemptions.", stats.preemptions),
            ):
                family = CounterMetricFamily(name, doc, labels=["model_name"])
                family.add_metric([self._model], float(value))
                yield family

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def observe_inter_token(self, seconds: float) -> None:
        for histogram in self._itl:
            histogram.observe(seconds)

    def observe_finished(self, seconds: float, prompt_tokens: int, output_tokens: int, reason: str) -> None:
        self.e2e.observe(seconds)
        self.prompt_tokens.inc((self._model,), prompt_tokens)
        self.generation_tokens.inc((self._model,), output_tokens)
        self.request_success.inc((self._model, reason))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def runtime_exposition(self) -> bytes:
        """What Kthena's runtime sidecar serves: every engine metric plus the ``kthena:*`` renames."""
        return generate_latest(_Standardised(self.registry))


KTHENA_NAMES = {
    "vllm:num_requests_waiting": "kthena:num_requests_waiting",
    "vllm:generation_tokens": "kthena:generation_tokens",
    "vllm:time_to_first_token_seconds": "kthena:time_to_first_token_seconds",
    "vllm:time_per_output_token_seconds": "kthena:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds": "kthena:e2e_request_latency_seconds",
    "sglang:num_queue_reqs": "kthena:num_requests_waiting",
    "sglang:generation_tokens": "kthena:generation_tokens",
    "sglang:time_to_first_token_seconds": "kthena:time_to_first_token_seconds",
    "sglang:inter_token_latency_seconds": "kthena:time_per_output_token_seconds",
    "sglang:e2e_request_latency_seconds": "kthena:e2e_request_latency_seconds",
}
"""Kthena runtime's metric standardisation (docs: user-guide/runtime, "Metric Standardization")."""


class _Standardised:
    """A registry view adding a ``kthena:*`` copy of each family the runtime renames."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            yield family
            standard = KTHENA_NAMES.get(family.name)
            if standard is not None:
                renamed = Metric(standard, family.documentation, family.type, family.unit)
                renamed.samples = [
                    s._replace(name=standard + s.name[len(family.name) :]) for s in family.samples
                ]
                yield renamed
