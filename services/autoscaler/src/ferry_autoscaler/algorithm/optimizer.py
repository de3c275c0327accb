"""The heterogeneous cost optimiser: one total split across several ModelServings (spec §4.5)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RATIO_SUFFIXES = ("_utilization", "_usage", "_ratio", "_percent", "_saturation")


def is_ratio_metric(name: str) -> bool:
    """Utilisation-like metrics are averaged across backends (weighted by replicas), others summed."""
    return name.lower().endswith(RATIO_SUFFIXES)


def aggregate_external(name: str, samples: Sequence[tuple[float, int]]) -> float:
    """One value from ``(value, replicas)`` per backend."""
    if not is_ratio_metric(name):
        return sum(value for value, _ in samples)
    weights = sum(replicas for _, replicas in samples)
    if weights == 0:
        return sum(value for value, _ in samples) / len(samples) if samples else 0.0
    return sum(value * replicas for value, replicas in samples) / weights


@dataclass(frozen=True)
class Backend:
    key: str
    """``namespace/name`` of the ModelServing."""
    cost: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class Block:
    backend: int
    size: int
    cost: float


@dataclass(frozen=True)
class OptimizerPlan:
    """Built once per policy generation."""

    backends: tuple[Backend, ...]
    blocks: tuple[Block, ...]
    min_total: int
    max_total: int

    @classmethod
    def build(cls, backends: Sequence[Backend], expansion_rate_percent: int) -> OptimizerPlan:
        blocks: list[Block] = []
        for index, backend in enumerate(backends):
            capacity = backend.max_replicas - backend.min_replicas
            if capacity <= 0:
                continue
            if expansion_rate_percent == 100:
                blocks.append(Block(index, capacity, backend.cost))
                continue
            length = 1.0
            while capacity > 0:
                size = min(max(1, int(length)), capacity)
                blocks.append(Block(index, size, backend.cost * size))
                capacity -= size
                length *= expansion_rate_percent / 100
        blocks.sort(key=lambda b: (b.cost, b.backend))
        return cls(
            tuple(backends),
            tuple(blocks),
            sum(b.min_replicas for b in backends),
            sum(b.max_replicas for b in backends),
        )

    def split(self, total: int) -> dict[str, int]:
        """Cheapest blocks first, everyone from their minimum; ignores where replicas are now."""
        replicas = [b.min_replicas for b in self.backends]
        remaining = min(max(total, self.min_total), self.max_total) - self.min_total
        for block in self.blocks:
            if remaining <= 0:
                break
            given = min(remaining, block.size)
            replicas[block.backend] += given
            remaining -= given
        return {b.key: n for b, n in zip(self.backends, replicas, strict=True)}
