"""Performance profiles: how long one engine step takes for a given batch, per model and GPU.

A step of a vLLM-like engine (continuous batching, chunked prefill) is modelled as

    step = overhead + weights_read + prefill_tokens * prefill_per_token + context_tokens * kv_read_per_token

* ``weights_read``: decoding is memory-bound, every step streams the weights once
  (bytes of weights / HBM bandwidth);
* ``prefill_per_token``: prefill is compute-bound (2 x parameters FLOPs per token at a model FLOPs
  utilisation);
* ``kv_read_per_token``: attention reads the KV cache of every running sequence
  (KV bytes per token / HBM bandwidth), so a step grows with the batch and its context lengths.

The numbers below are derived from public figures, named in each profile's ``sources``. They are
not measurements of a real GPU: they give the *shape* (prefill cost vs decode cost vs batch) that
routing decisions depend on. ``overhead`` covers the scheduler, sampling and kernel launches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


@dataclass(frozen=True)
class Profile:
    name: str
    params: float  # parameters
    weight_bytes: float  # bytes of weights read per step
    kv_bytes_per_token: float  # K and V of every layer for one token
    hbm_bytes_per_s: float
    flops_per_s: float  # dense bf16 peak
    mfu: float  # model FLOPs utilisation reached by prefill
    overhead: float  # seconds per step
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    kv_cache_blocks: int  # blocks that fit at gpu-memory-utilization 0.9
    sources: tuple[str, ...] = field(default=())

    @property
    def weights_read(self) -> float:
        return self.weight_bytes / self.hbm_bytes_per_s

    @property
    def prefill_per_token(self) -> float:
        return 2.0 * self.params / (self.flops_per_s * self.mfu)

    @property
    def kv_read_per_token(self) -> float:
        return self.kv_bytes_per_token / self.hbm_bytes_per_s

    def step_time(self, prefill_tokens: int, context_tokens: int) -> float:
        """Seconds for one step that prefills ``prefill_tokens`` and attends over ``context_tokens``."""
        return (
            self.overhead
            + self.weights_read
            + prefill_tokens * self.prefill_per_token
            + context_tokens * self.kv_read_per_token
        )


def _kv_bytes(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int = 2) -> float:
    return 2.0 * layers * kv_heads * head_dim * dtype_bytes


def _kv_blocks(gpu_bytes: float, weight_bytes: float, kv_per_token: float, block_size: int) -> int:
    """vLLM's sizing: 90 % of the GPU, minus weights and ~5 % for activations, divided into blocks."""
    free = gpu_bytes * 0.9 - weight_bytes - gpu_bytes * 0.05
    return int(free / (kv_per_token * block_size))


@dataclass(frozen=True)
class Gpu:
    hbm_bytes_per_s: float
    flops_per_s: float  # dense bf16 peak
    memory_bytes: float
    source: str


@dataclass(frozen=True)
class Model:
    params: float
    kv_bytes_per_token: float
    mfu: float
    source: str


GPUS: dict[str, Gpu] = {
    "h100": Gpu(
        3.35e12, 989e12, 80 * GIB, "NVIDIA H100 datasheet: SXM 80 GB HBM3 3.35 TB/s, 989 TFLOPS dense BF16"
    ),
    "a100": Gpu(
        2.039e12, 312e12, 80 * GIB, "NVIDIA A100 datasheet: SXM 80 GB HBM2e 2,039 GB/s, 312 TFLOPS dense BF16"
    ),
    "a100-40gb": Gpu(
        1.555e12, 312e12, 40 * GIB, "NVIDIA A100 datasheet: 40 GB HBM2 1,555 GB/s, 312 TFLOPS dense BF16"
    ),
    "l40s": Gpu(
        0.864e12, 362e12, 48 * GIB, "NVIDIA L40S datasheet: 48 GB GDDR6 864 GB/s, 362 TFLOPS dense BF16"
    ),
}
_MFU_SRC = "prefill MFU ~40 %: typical for vLLM (vLLM/FlashAttention benchmarks report 35-55 %)"
MODELS: dict[str, Model] = {
    # The model of Kthena's router benchmark.
    "deepseek-r1-distill-qwen-7b": Model(
        7.6e9,
        _kv_bytes(28, 4, 128),
        0.4,
        "Qwen2.5-7B / DeepSeek-R1-Distill-Qwen-7B config.json: 7.6 B parameters, 28 layers, "
        "4 KV heads x 128 head dim (GQA) -> 56 KiB of bf16 KV per token; " + _MFU_SRC,
    ),
    # The demo's model (small matrices: a lower MFU).
    "qwen2.5-0.5b": Model(
        0.49e9,
        _kv_bytes(24, 2, 64),
        0.3,
        "Qwen2.5-0.5B-Instruct config.json: 0.49 B parameters, 24 layers, 2 KV heads x 64 head dim",
    ),
}
_VLLM_SRC = "vLLM defaults: max-num-seqs 256, max-num-batched-tokens 8192, block size 16"


def _profile(model_name: str, gpu_name: str) -> Profile:
    model, gpu = MODELS[model_name], GPUS[gpu_name]
    weight_bytes = 2.0 * model.params  # bf16
    return Profile(
        name=f"{model_name}-{gpu_name}",
        params=model.params,
        weight_bytes=weight_bytes,
        kv_bytes_per_token=model.kv_bytes_per_token,
        hbm_bytes_per_s=gpu.hbm_bytes_per_s,
        flops_per_s=gpu.flops_per_s,
        mfu=model.mfu,
        overhead=0.002,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        block_size=16,
        kv_cache_blocks=_kv_blocks(gpu.memory_bytes, weight_bytes, model.kv_bytes_per_token, 16),
        sources=(model.source, gpu.source, _VLLM_SRC),
    )


# Every model on every GPU, named ``<model>-<gpu>``.
PROFILES: dict[str, Profile] = {p.name: p for p in (_profile(model, gpu) for model in MODELS for gpu in GPUS)}
DEFAULT_PROFILE = "deepseek-r1-distill-qwen-7b-h100"


def profile_named(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(
            f"unknown simulator profile {name!r}; known: {', '.join(sorted(PROFILES))}"
        ) from None
