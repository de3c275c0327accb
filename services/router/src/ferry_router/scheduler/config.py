"""The scheduler section of Kthena's ``routerConfiguration`` YAML (spec §7.4).

```yaml
scheduler:
  pluginConfig: [{name: least-request, args: {maxWaitingRequests: 10}}]
  plugins:
    Filter: {enabled: [least-request], disabled: []}
    Score: {enabled: [{name: least-request, weight: 1}], disabled: []}
```

``scheduler.sampleSize`` (a Ferry extension, default 16, 0 = off): servers with more endpoints
than that are scheduled over that many random endpoints plus prefix-cache's matches (see
``framework``), so a request costs the same at 20 endpoints as at 2,000.

Differences from Kthena, on purpose: names in ``disabled`` are removed from ``enabled``; a missing
file means the shipped Helm defaults (Kthena exits). ``kvcache-aware`` reads its block index
from the bus (Ferry's runtime sidecar), not from Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ferry_router.scheduler.framework import FilterPlugin, Scheduler, ScorePlugin
from ferry_router.scheduler.gpu_usage import GPUUsage
from ferry_router.scheduler.kvcache_aware import KVCacheAware, validate_args
from ferry_router.scheduler.least_latency import LeastLatency, validate_factor
from ferry_router.scheduler.least_request import LeastRequest
from ferry_router.scheduler.lora_affinity import LoraAffinity
from ferry_router.scheduler.prefix_cache import PrefixCache
from ferry_router.scheduler.random_score import RandomScore

log = logging.getLogger(__name__)

PluginFactory = Callable[[dict[str, Any] | None], object]
FILTERS: dict[str, PluginFactory] = {
    "least-request": LeastRequest,
    "lora-affinity": LoraAffinity,
    "kvcache-aware": KVCacheAware,  # Ferry extension: the affinity filter
}
SCORERS: dict[str, PluginFactory] = {
    "least-request": LeastRequest,
    "gpu-usage": GPUUsage,
    "least-latency": LeastLatency,
    "prefix-cache": PrefixCache,
    "kvcache-aware": KVCacheAware,
    "random": RandomScore,
}

DEFAULT_YAML = """
scheduler:
  pluginConfig:
  - name: least-request
    args: {maxWaitingRequests: 10}
  - name: least-latency
    args: {TTFTTPOTWeightFactor: 0.5}
  - name: prefix-cache
    args: {blockSizeToHash: 64, maxBlocksToMatch: 128, maxHashCacheSize: 50000, topKMatches: 5}
  plugins:
    Filter:
      enabled: [least-request]
    Score:
      enabled:
      - {name: least-request, weight: 1}
      - {name: gpu-usage, weight: 1}
      - {name: least-latency, weight: 1}
      - {name: prefix-cache, weight: 1}
"""


DEFAULT_SAMPLE_SIZE = 16


@dataclass
class SchedulerConfig:
    filters: list[str] = field(default_factory=list)
    scorers: list[tuple[str, float]] = field(default_factory=list)
    args: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_size: int = DEFAULT_SAMPLE_SIZE


def _name(item: Any, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return str(item["name"])
    raise ValueError(f"{where}: plugin entries must be a name or {{name: ..., weight: ...}}, got {item!r}")


def parse_config(text: str) -> SchedulerConfig:
    """Parse ``routerConfiguration`` text; raises ``ValueError`` naming the bad field."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"router configuration is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("router configuration must be a mapping")
    section = doc.get("scheduler") or {}
    config = SchedulerConfig()
    raw_sample = section.get("sampleSize", DEFAULT_SAMPLE_SIZE)
    if isinstance(raw_sample, bool) or not isinstance(raw_sample, int) or raw_sample < 0:
        raise ValueError(f"scheduler.sampleSize: must be an integer >= 0 (0 = off), got {raw_sample!r}")
    config.sample_size = raw_sample
    for i, entry in enumerate(section.get("pluginConfig") or []):
        name = _name(entry, f"scheduler.pluginConfig[{i}]")
        args = entry.get("args") if isinstance(entry, dict) else None
        config.args[name] = dict(args or {}) if isinstance(args, dict) else {}
    plugins = section.get("plugins") or {}
    filters = plugins.get("Filter") or {}
    scores = plugins.get("Score") or {}
    disabled_f = {_name(x, "scheduler.plugins.Filter.disabled") for x in filters.get("disabled") or []}
    disabled_s = {_name(x, "scheduler.plugins.Score.disabled") for x in scores.get("disabled") or []}
    for i, item in enumerate(filters.get("enabled") or []):
        name = _name(item, f"scheduler.plugins.Filter.enabled[{i}]")
        if name not in disabled_f:
            config.filters.append(name)
    for i, item in enumerate(scores.get("enabled") or []):
        name = _name(item, f"scheduler.plugins.Score.enabled[{i}]")
        if name in disabled_s:
            continue
        raw_weight = item.get("weight", 1) if isinstance(item, dict) else 1
        try:
            weight = max(float(raw_weight), 0.0)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"scheduler.plugins.Score.enabled[{i}].weight: not a number: {raw_weight!r}"
            ) from exc
        config.scorers.append((name, weight))
    if "least-latency" in config.args:
        validate_factor(config.args["least-latency"])
    if "kvcache-aware" in config.args:
        validate_args(config.args["kvcache-aware"])
    if any(n == "random" for n, _ in config.scorers) and len(config.scorers) > 1:
        log.warning("the random score plugin cannot be combined with others; removing it")
        config.scorers = [(n, w) for n, w in config.scorers if n != "random"]
    return config


def load_config(path: str | Path | None) -> SchedulerConfig:
    """The config at ``path``; the shipped defaults when ``path`` is empty."""
    if not path:
        return parse_config(DEFAULT_YAML)
    return parse_config(Path(path).read_text())


def build_scheduler(config: SchedulerConfig) -> Scheduler:
    instances: dict[str, object] = {}

    def instance(name: str, registry: dict[str, PluginFactory]) -> object | None:
        factory = registry.get(name)
        if factory is None:
            log.warning("scheduler plugin %r is unknown or unsupported here; skipped", name)
            return None
        if name not in instances or not isinstance(instances[name], factory):  # type: ignore[arg-type]
            instances[name] = factory(config.args.get(name))
        return instances[name]

    filters: list[FilterPlugin] = []
    for name in config.filters:
        plugin = instance(name, FILTERS)
        if plugin is not None:
            filters.append(plugin)  # type: ignore[arg-type]
    scorers: list[tuple[ScorePlugin, float]] = []
    for name, weight in config.scorers:
        plugin = instance(name, SCORERS)
        if plugin is not None:
            scorers.append((plugin, weight))  # type: ignore[arg-type]
    return Scheduler(filters, scorers, sample_size=config.sample_size)
