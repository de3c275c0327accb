"""The engine's real load and the Prometheus metrics that expose it under vLLM (or SGLang) names.

Gauges are computed at scrape time from :class:`Load`, so ``/metrics`` always shows what is
running right now; histograms record every request's TTFT and inter-token latency. Each engine
has its own registry, so several engines can live in one test process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ferry_mock_engine.config import EngineConfig, EngineKind

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
    def __init__(self, config: EngineConfig, load: Load) -> None:
        self._config = config
        self._load = load

    def collect(self) -> Iterator[Metric]:
        cfg, load = self._config, self._load
        model = cfg.names[0]
        usage = min(1.0, load.blocks(cfg.block_size) / max(1, cfg.kv_cache_blocks))
        gauges: list[tuple[str, str, float]]
        if cfg.engine is EngineKind.SGLANG:
            gauges = [
                ("sglang:num_running_reqs", "Running requests.", len(load.running)),
                ("sglang:num_queue_reqs", "Queued requests.", load.waiting),
                ("sglang:token_usage", "KV cache token usage (0..1).", usage),
            ]
        else:
            gauges = [
                ("vllm:num_requests_running", "Requests in model execution batches.", len(load.running)),
                ("vllm:num_requests_waiting", "Requests waiting to be processed.", load.waiting),
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
            running = ",".join(sorted(set(load.running_loras.values())))
            waiting = ",".join(sorted(name for name, n in load.waiting_loras.items() if n > 0))
            info.add_metric([str(cfg.max_loras), running, waiting], time.time())
            yield info


class EngineMetrics:
    """Registry + instruments for one engine."""

    def __init__(self, config: EngineConfig, load: Load) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_LoadCollector(config, load))
        prefix = "sglang" if config.engine is EngineKind.SGLANG else "vllm"
        self._model = config.names[0]
        labels = ["model_name"]
        self.ttft = Histogram(
            f"{prefix}:time_to_first_token_seconds", "Time to first token.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.itl = Histogram(
            f"{prefix}:inter_token_latency_seconds", "Inter-token latency.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tpot: Histogram | None = None
        if prefix == "vllm":
            self.tpot = Histogram(
                "vllm:time_per_output_token_seconds", "Time per output token.", labels,
                buckets=_LATENCY_BUCKETS, registry=self.registry,
            )  # fmt: skip
        self.e2e = Histogram(
            f"{prefix}:e2e_request_latency_seconds", "End-to-end request latency.", labels,
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            f"{prefix}:prompt_tokens", "Prefill tokens processed.", labels, registry=self.registry
        )
        self.generation_tokens = Counter(
            f"{prefix}:generation_tokens", "Generation tokens processed.", labels, registry=self.registry
        )
        self.request_success = Counter(
            f"{prefix}:request_success",
            "Successfully finished requests.",
            [*labels, "finished_reason"],
            registry=self.registry,
        )

    def observe_first_token(self, seconds: float) -> None:
        self.ttft.labels(self._model).observe(seconds)

    def observe_inter_token(self, seconds: float) -> None:
        self.itl.labels(self._model).observe(seconds)
        if self.tpot is not None:
            self.tpot.labels(self._model).observe(seconds)

    def observe_finished(self, seconds: float, prompt_tokens: int, output_tokens: int, reason: str) -> None:
        self.e2e.labels(self._model).observe(seconds)
        self.prompt_tokens.labels(self._model).inc(prompt_tokens)
        self.generation_tokens.labels(self._model).inc(output_tokens)
        self.request_success.labels(self._model, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
