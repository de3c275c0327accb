"""Performance profiles: how long one engine step takes for a given batch, per model and GPU.

A step of a vLLM-like engine (continuous batching, chunked prefill) is modelled as

    step = overhead + weights_read + prefill_tokens * prefill_per_token
           + prefill_pairs * prefill_per_pair + context_tokens * kv_read_per_token

* ``weights_read``: decoding is memory-bound, every step streams the weights once
  (bytes of weights / HBM bandwidth);
* ``prefill_per_token``: the dense part of prefill is compute-bound (2 x parameters FLOPs per token
  at a model FLOPs utilisation);
* ``prefill_per_pair``: prefill attention is compute-bound too and quadratic: every new token
  attends to every token before it, cached or new (4 x layers x heads x head dim FLOPs per
  query-key pair, see :func:`attended_pairs`). For the 7B model it adds 5 % to a cold 4k prompt
  and 11 % to a 64-token question asked after 4k cached tokens;
* ``kv_read_per_token``: decode attention reads the KV cache of every running sequence
  (KV bytes per token / HBM bandwidth), so a step grows with the batch and its context lengths.

The KV pool is vLLM's sizing: 90 % of the GPU, minus the weights and the activations of the largest
step (``max_num_batched_tokens`` tokens), divided into blocks.

The numbers below are derived from public figures, named in each profile's ``sources``. They are
not measurements of a real GPU: they give the *shape* (prefill cost vs decode cost vs batch) that
routing decisions depend on. ``overhead`` covers the scheduler, sampling and kernel launches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GIB = 1024**3


def attended_pairs(computed: int, new: int) -> int:
    """Query-key pairs of prefilling ``new`` tokens after ``computed`` ones (causal attention)."""
    return new * computed + new * (new + 1) // 2


@dataclass(frozen=True)
class Profile:
    name: str
    params: float  # parameters
    weight_bytes: float  # bytes of weights read per step
    kv_bytes_per_token: float  # K and V of every layer for one token
    attention_flops_per_pair: float  # one query attending to one key, every layer and head
    hbm_bytes_per_s: float
    flops_per_s: float  # dense bf16 peak
    mfu: float  # model FLOPs utilisation reached by prefill
    overhead: float  # seconds per step
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int
    memory_bytes: float  # the GPU's memory
    activation_bytes_per_token: float  # the largest activations one batched token needs
    sources: tuple[str, ...] = field(default=())

    @property
    def weights_read(self) -> float:
        return self.weight_bytes / self.hbm_bytes_per_s

    @property
    def prefill_per_token(self) -> float:
        return 2.0 * self.params / (self.flops_per_s * self.mfu)

    @property
    def prefill_per_pair(self) -> float:
        return self.attention_flops_per_pair / (self.flops_per_s * self.mfu)

    @property
    def kv_read_per_token(self) -> float:
        return self.kv_bytes_per_token / self.hbm_bytes_per_s

    @property
    def kv_cache_blocks(self) -> int:
        """Blocks that fit at the profile's own block size and step size."""
        return self.kv_blocks(self.block_size, self.max_num_batched_tokens)

    def kv_blocks(self, block_size: int, max_num_batched_tokens: int) -> int:
        """vLLM's sizing at gpu-memory-utilization 0.9: what the weights and the activations of the
        largest step leave, in blocks of ``block_size`` tokens."""
        activations = self.activation_bytes_per_token * max_num_batched_tokens
        usable = self.memory_bytes * 0.9
        blocks = int((usable - self.weight_bytes - activations) / (self.kv_bytes_per_token * block_size))
        if blocks <= 0:  # vLLM refuses to start too ("No available memory for the cache blocks")
            raise ValueError(
                f"no memory left for KV cache blocks on profile {self.name}: of {usable / GIB:.1f} GiB "
                f"(0.9 of the GPU) the weights take {self.weight_bytes / GIB:.1f} GiB and a "
                f"{max_num_batched_tokens}-token step's activations {activations / GIB:.1f} GiB; "
                "lower --max-num-batched-tokens or give --kv-cache-size"
            )
        return blocks

    def step_time(self, prefill_tokens: int, context_tokens: int, prefill_pairs: int = 0) -> float:
        """Seconds for one step that prefills ``prefill_tokens`` (attending over ``prefill_pairs``
        query-key pairs) and reads ``context_tokens`` of KV cache."""
        return (
            self.overhead
            + self.weights_read
            + prefill_tokens * self.prefill_per_token
            + prefill_pairs * self.prefill_per_pair
            + context_tokens * self.kv_read_per_token
        )


@dataclass(frozen=True)
class Gpu:
    hbm_bytes_per_s: float
    flops_per_s: float  # dense bf16 peak
    memory_bytes: float
    source: str


@dataclass(frozen=True)
class Model:
    params: float
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    mfu: float
    source: str

    @property
    def kv_bytes_per_token(self) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * 2  # K and V, bf16

    @property
    def attention_flops_per_pair(self) -> float:
        return 4.0 * self.layers * self.heads * self.head_dim  # q.k and p.v, 2 FLOPs per MAC

    @property
    def activation_bytes_per_token(self) -> float:
        """The widest live tensors of one layer for one token: the residual stream, the attention
        output and the MLP's gate, up and product, in bf16 (vLLM frees each layer's)."""
        return (2.0 * self.hidden + 3.0 * self.intermediate) * 2


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
        layers=28,
        hidden=3584,
        intermediate=18944,
        heads=28,
        kv_heads=4,
        head_dim=128,
        mfu=0.4,
        source="Qwen2.5-7B / DeepSeek-R1-Distill-Qwen-7B config.json: 7.6 B parameters, 28 layers, "
        "hidden 3584, intermediate 18944, 28 heads, 4 KV heads x 128 head dim (GQA) -> 56 KiB of "
        "bf16 KV per token; " + _MFU_SRC,
    ),
    # The demo's model (small matrices: a lower MFU).
    "qwen2.5-0.5b": Model(
        0.49e9,
        layers=24,
        hidden=896,
        intermediate=4864,
        heads=14,
        kv_heads=2,
        head_dim=64,
        mfu=0.3,
        source="Qwen2.5-0.5B-Instruct config.json: 0.49 B parameters, 24 layers, hidden 896, "
        "intermediate 4864, 14 heads, 2 KV heads x 64 head dim",
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
        attention_flops_per_pair=model.attention_flops_per_pair,
        hbm_bytes_per_s=gpu.hbm_bytes_per_s,
        flops_per_s=gpu.flops_per_s,
        mfu=model.mfu,
        overhead=0.002,
        max_num_seqs=256,
        max_num_batched_tokens=8192,
        block_size=16,
        memory_bytes=gpu.memory_bytes,
        activation_bytes_per_token=model.activation_bytes_per_token,
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
