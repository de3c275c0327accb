"""Engine load: what an engine's ``/metrics`` says about how busy it is, parsed once.

The runtime sidecar beside each engine reads its engine's Prometheus text (local, cheap) and
publishes an :class:`EngineLoad` on ``ferry.load.<ns>.<model>.<pod>`` (stream ``FERRY_LOAD``, the last
message per pod) whenever the load changes and at least every ``LOAD_HEARTBEAT_SECONDS``. Every
router replica and the autoscaler read it instead of scraping every engine themselves; a consumer
treats load older than ``LOAD_STALE_SECONDS`` as unknown. Engines without a sidecar are scraped
by the router, with the same parser (:func:`parse_exposition`) and the same interval means
(:class:`LoadReader`).

Only the names below are parsed; everything else in the exposition is skipped by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ferry_schemas.bus import (
    LOAD_HEARTBEAT_SECONDS,
    LOAD_PREFIX,
    LOAD_STALE_SECONDS,
    LOAD_STREAM,
    Envelope,
    encode_token,
)

__all__ = [
    "LOAD_FILTER",
    "LOAD_HEARTBEAT_SECONDS",
    "LOAD_STALE_SECONDS",
    "LOAD_STREAM",
    "EngineLoad",
    "LoadReader",
    "load_subject",
    "parse_exposition",
]

LOAD_FILTER = f"{LOAD_PREFIX}.>"

GAUGES = {
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage"),
    "waiting": ("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
    "running": ("vllm:num_requests_running", "sglang:num_running_reqs"),
}
"""Routing gauges: the last series of the first family present wins."""
HISTOGRAMS = {
    "ttft": ("vllm:time_to_first_token_seconds", "sglang:time_to_first_token_seconds"),
    "tpot": (
        "vllm:inter_token_latency_seconds",
        "vllm:time_per_output_token_seconds",
        "sglang:inter_token_latency_seconds",
    ),
}
KTHENA_NAMES = {
    "vllm:num_requests_waiting": "kthena:num_requests_waiting",
    "vllm:generation_tokens": "kthena:generation_tokens",
    "sglang:num_queue_reqs": "kthena:num_requests_waiting",
    "sglang:generation_tokens": "kthena:generation_tokens",
}
"""Kthena runtime's renames of the counters and gauges (its "Metric Standardization")."""
SERIES = (
    *(name for names in GAUGES.values() for name in names),
    "vllm:generation_tokens",
    "vllm:prompt_tokens",
    "vllm:num_preemptions",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "sglang:generation_tokens",
    "sglang:prompt_tokens",
)
"""Counters and gauges published as ``series`` (the sum of every sample, the autoscaler's reading),
by family name (a counter's ``_total`` dropped), plus their ``kthena:*`` names."""

_GAUGE_OF = {name: f for f, names in GAUGES.items() for name in names}
_HIST_OF = {name: f for f, names in HISTOGRAMS.items() for name in names}
_SERIES = frozenset(SERIES)


@dataclass(slots=True)
class Exposition:
    gauges: dict[str, float] = field(default_factory=dict)
    hists: dict[str, tuple[float, float]] = field(default_factory=dict)  # field -> (sum, count)
    series: dict[str, float] = field(default_factory=dict)


def parse_exposition(text: str, *, series: bool = False) -> Exposition:
    """Routing gauges (last series wins), histogram (sum, count) summed over series and, with
    ``series``, the :data:`SERIES` families summed over samples (with their Kthena names)."""
    out = Exposition()
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        brace = line.find("{")
        if brace >= 0:
            name = line[:brace]
            rest = line[line.rfind("}") + 1 :].split()
        else:
            parts = line.split()
            name, rest = parts[0], parts[1:]
        if not rest:
            continue
        gauge = _GAUGE_OF.get(name)
        hist, total = None, counts
        if name.endswith("_sum"):
            hist, total = _HIST_OF.get(name[:-4]), sums
        elif name.endswith("_count"):
            hist = _HIST_OF.get(name[:-6])
        family = None
        if series:
            if name in _SERIES:
                family = name
            elif name.endswith("_total") and name[:-6] in _SERIES:
                family = name[:-6]
        if gauge is None and hist is None and family is None:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if gauge is not None:
            out.gauges[gauge] = value
        if hist is not None:
            total[hist] = total.get(hist, 0.0) + value
        if family is not None:
            out.series[family] = out.series.get(family, 0.0) + value
    out.hists = {f: (sums.get(f, 0.0), counts[f]) for f in counts}
    if series:
        for engine_name, kthena_name in KTHENA_NAMES.items():
            if engine_name in out.series:
                out.series[kthena_name] = out.series[engine_name]
    return out


def interval_mean(previous: tuple[float, float] | None, now: tuple[float, float]) -> float:
    """Mean of the samples observed since ``previous`` (0 when none; whole mean after a reset)."""
    if previous is None:
        return 0.0
    dsum, dcount = now[0] - previous[0], now[1] - previous[1]
    if dcount < 0 or dsum < 0:
        return now[0] / now[1] if now[1] > 0 else 0.0
    return dsum / dcount if dcount > 0 else 0.0


class LoadState(Protocol):
    """Where one engine's readings accumulate (the sidecar's :class:`LoadReader`, the router's
    per-endpoint metrics)."""

    kv_cache_usage: float
    waiting: float
    running: float
    ttft: float
    tpot: float
    ttft_load: float
    tpot_load: float
    ttft_hist: tuple[float, float] | None
    tpot_hist: tuple[float, float] | None


def update_load(state: LoadState, parsed: Exposition) -> None:
    """Gauges as read (0 when absent); TTFT/TPOT as the mean over the last interval with samples,
    each with the engine's load (running + waiting) at the reading that brought those samples."""
    state.kv_cache_usage = parsed.gauges.get("kv_cache_usage", 0.0)
    state.waiting = parsed.gauges.get("waiting", 0.0)
    state.running = parsed.gauges.get("running", 0.0)
    for name in ("ttft", "tpot"):
        now = parsed.hists.get(name)
        if now is None:
            continue
        mean = interval_mean(getattr(state, f"{name}_hist"), now)
        if mean > 0:
            setattr(state, name, mean)
            setattr(state, f"{name}_load", state.running + state.waiting)
        setattr(state, f"{name}_hist", now)


@dataclass(slots=True)
class LoadReader:
    """Successive readings of one engine (see :func:`update_load`), plus the ``series``."""

    kv_cache_usage: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    ttft: float = 0.0
    tpot: float = 0.0
    ttft_load: float = 0.0
    tpot_load: float = 0.0
    ttft_hist: tuple[float, float] | None = None
    tpot_hist: tuple[float, float] | None = None
    series: dict[str, float] = field(default_factory=dict)

    def read(self, text: str, *, series: bool = False) -> None:
        parsed = parse_exposition(text, series=series)
        update_load(self, parsed)
        self.series = parsed.series

    def routing(self) -> tuple[float, float, float, float, float]:
        """What the router schedules on: (kv usage, waiting, running, ttft, tpot)."""
        return (self.kv_cache_usage, self.waiting, self.running, self.ttft, self.tpot)


def load_subject(namespace: str, model: str, pod: str) -> str:
    """``ferry.load.<ns>.<model>.<pod>``."""
    return f"{LOAD_PREFIX}.{encode_token(namespace)}.{encode_token(model)}.{encode_token(pod)}"


class EngineLoad(Envelope):
    """One engine's load as its sidecar last read it."""

    namespace: str
    pod: str
    model: str
    epoch: str  # one sidecar process
    seq: int  # per epoch, from 1
    sent_at: float  # the sidecar's clock (Unix seconds)
    heartbeat: float = LOAD_HEARTBEAT_SECONDS  # the sidecar publishes at least this often
    kv_cache_usage: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    ttft: float = 0.0  # seconds, mean over the last interval with samples (0: none yet)
    tpot: float = 0.0
    series: dict[str, float] = {}
    models: list[str] | None = None  # the ids ``/v1/models`` lists (None: not read yet)
    base_models: list[str] = []  # those that are not LoRA adapters, in order

    @property
    def pod_key(self) -> str:
        return f"{self.namespace}/{self.pod}"

    @property
    def subject(self) -> str:
        return load_subject(self.namespace, self.model, self.pod)
