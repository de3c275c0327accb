"""What one mock engine is: its names, address, role in prefill/decode, timing and capacity."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """Which side of prefill/decode disaggregation this engine plays."""

    AGGREGATED = "aggregated"  # an ordinary engine: no PD checks
    PREFILL = "prefill"
    DECODE = "decode"
    BOTH = "both"  # vLLM ``kv_role: kv_both``: the request's kv_transfer_params decide


class Connector(StrEnum):
    """The router connector (spec/router.md §13) whose request shape this engine expects."""

    HTTP = "http"
    LMCACHE = "lmcache"
    NIXL = "nixl"
    MOONCAKE = "mooncake"
    SGLANG = "sglang"


class EngineKind(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"


DEFAULT_PORTS = {EngineKind.VLLM: 8000, EngineKind.SGLANG: 30000}


@dataclass(frozen=True)
class LoraModule:
    name: str
    path: str
    base_model_name: str | None = None


@dataclass
class EngineConfig:
    """Everything the server needs; built from vLLM/SGLang flags by :mod:`ferry_mock_engine.cli`.

    Times are seconds. ``ttft`` is the fixed time to first token, ``prefill_per_token`` is added per
    prompt token, ``itl`` is the delay between output tokens, ``kv_transfer_latency`` is added to a
    decode request that receives KV from a prefill.
    """

    model: str = "mock-model"
    served_model_names: list[str] = field(default_factory=list)
    host: str = "0.0.0.0"  # an engine in a pod listens on every address, as vLLM does
    port: int | None = None
    engine: EngineKind = EngineKind.VLLM
    role: Role = Role.AGGREGATED
    connector: Connector = Connector.HTTP
    engine_id: str = ""
    identity_token: str = ""  # set by a local node: /health proves the engine is that pod's (identity.py)
    runtime_port: int | None = None
    """Also serve Kthena's runtime sidecar ``/metrics`` (raw + ``kthena:*`` names) on this port."""
    ttft: float = 0.0
    itl: float = 0.0
    prefill_per_token: float = 0.0
    kv_transfer_latency: float = 0.0
    mode: str = "hash"  # "hash": deterministic text naming model and prompt hash; "echo": echo the prompt
    default_output_tokens: int = 16
    max_num_seqs: int = 256
    max_model_len: int = 32768
    block_size: int = 16
    kv_cache_blocks: int = 4096
    tensor_parallel_size: int = 1
    enable_lora: bool = False
    max_loras: int = 8
    lora_modules: list[LoraModule] = field(default_factory=list)
    ignored_flags: list[str] = field(default_factory=list)
    max_recorded_requests: int = 10000
    # the simulator (ferry_mock_engine.simulator): on when a profile is named or KV events are enabled
    profile: str | None = None
    time_scale: float = 1.0  # wall seconds per simulated second
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    kv_events_config: str | None = None  # vLLM's --kv-events-config JSON

    @property
    def names(self) -> list[str]:
        """The model names requests may use (besides loaded LoRA adapters)."""
        return self.served_model_names or [self.model]

    @property
    def bind_port(self) -> int:
        return DEFAULT_PORTS[self.engine] if self.port is None else self.port


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m)?\s*$")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_duration(text: str, *, default_unit: str = "ms") -> float:
    """``"20ms"``, ``"0.5s"``, ``"20"`` (milliseconds, as llm-d-inference-sim reads it) → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 20ms, 0.5s or a number of {default_unit})")
    value, unit = match.groups()
    return float(value) * _UNIT_SECONDS[unit or default_unit]
