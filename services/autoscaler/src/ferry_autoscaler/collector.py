"""Metric collection for one scaling unit: scrape the target's ready entry pods, query Prometheus.

Pod metrics are grouped by endpoint ``(uri, port, selector)`` so each pod is fetched once per
group per cycle, and summed over ready pods (spec §3.2): the algorithm sees one instance whose
value is the sum. A group is dropped for the cycle (its metrics missing, with the reason kept for
the policy's status) when no pod matches, any pod failed, restarted or is terminating, or any ready
pod's scrape fails. Prometheus values are totals ("external" metrics, §3.3).

A pod whose runtime sidecar pushes its engine's load on the bus (``ferry_schemas.load``) is not
scraped when that fresh load carries every counter or gauge the group asks for (``pushed``); a
histogram, or a name the sidecar does not publish, is scraped as before.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from ferry_schemas.labels import ENTRY_VALUE, MS_ENTRY, MS_NAME, MS_ROLE

from ferry_autoscaler.algorithm.histogram import HistogramError, HistogramSnapshot, quantile
from ferry_autoscaler.algorithm.windows import SnapshotWindow
from ferry_autoscaler.exposition import ExpositionError, extract, parse_families
from ferry_autoscaler.metrics import PUSHED_READS, SCRAPE_FAILURES
from ferry_autoscaler.policies import LabelSelector, MetricTarget, PodSource, PrometheusSource, ServingRef

log = logging.getLogger(__name__)

Pod = dict[str, Any]
PushedSeries = Callable[[str], Mapping[str, float] | None]
"""``pushed("<ns>/<pod>")``: the pod's fresh pushed counters and gauges (None: scrape it)."""
HISTOGRAM_PERCENTILE = 95.0
BASELINE_FRESH = 60.0
BASELINE_KEEP = 300.0


@dataclass
class Collected:
    ready: dict[str, float] = field(default_factory=dict)
    """Per metric: the sum over ready pods (only metrics some pod reported)."""
    unready: int = 0
    external: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """Why metrics are missing this cycle (shown in the policy's status)."""

    @property
    def values(self) -> dict[str, float]:
        return self.ready | self.external


def pod_url(ip: str, port: int, uri: str) -> str:
    host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port or 8100}{uri or '/metrics'}"


POD_STATUS_KEPT = ("phase", "conditions", "podIP", "startTime")
CONTAINER_STATUSES = ("initContainerStatuses", "containerStatuses")


def pod_kept(pod: Pod) -> Pod:
    """What the autoscaler's view keeps of a pod: its metadata and what :func:`is_ready`,
    :func:`is_disrupted` and a scrape read of its status (never its spec, the largest part of it)."""
    status = pod.get("status") or {}
    kept: Pod = {key: pod[key] for key in ("apiVersion", "kind", "metadata") if key in pod}
    kept["status"] = {key: status[key] for key in POD_STATUS_KEPT if key in status}
    for key in CONTAINER_STATUSES:
        if status.get(key):
            kept["status"][key] = [{"restartCount": c.get("restartCount", 0)} for c in status[key]]
    return kept


def is_ready(pod: Pod) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def is_disrupted(pod: Pod) -> bool:
    """Failed, terminating, or a container restarted: Kthena drops the whole group then."""
    status = pod.get("status") or {}
    if status.get("phase") == "Failed" or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return True
    if status.get("phase") not in ("Running", "Pending"):
        return False
    statuses = list(status.get("containerStatuses") or ()) + list(status.get("initContainerStatuses") or ())
    return any(int(s.get("restartCount") or 0) > 0 for s in statuses)


def target_selector(ref: ServingRef, role: str | None, user: LabelSelector) -> LabelSelector:
    labels = {MS_NAME: ref.name, MS_ENTRY: ENTRY_VALUE}
    if role:
        labels[MS_ROLE] = role
    return user.with_labels(labels)


def _pod_name(pod: Pod) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


class HistogramBaselines:
    """Per pod: the histograms seen each cycle; the baseline is the newest one at least 60 s old."""

    def __init__(self) -> None:
        self._windows: dict[str, SnapshotWindow[tuple[str, dict[str, HistogramSnapshot]]]] = {}

    def baseline(self, pod: str, start_time: str, now: float) -> dict[str, HistogramSnapshot]:
        window = self._windows.get(pod)
        found = window.last_unfresh(now) if window else None
        if found is None or found[0] != start_time:
            return {}
        return found[1]

    def record(self, pod: str, start_time: str, snapshots: dict[str, HistogramSnapshot], now: float) -> None:
        window = self._windows.setdefault(pod, SnapshotWindow(BASELINE_FRESH, BASELINE_KEEP))
        window.append((start_time, snapshots), now)


def from_pushed(
    series: Mapping[str, float], members: Sequence[tuple[str, PodSource]]
) -> dict[str, float] | None:
    """Every member's value from pushed ``series`` (a counter by its name with or without
    ``_total``), or ``None`` when one is missing."""
    values: dict[str, float] = {}
    for name, source in members:
        value = series.get(source.series)
        if value is None:
            value = series.get(source.series.removesuffix("_total"))
        if value is None:
            return None
        values[name] = value
    return values


class MetricCollector:
    def __init__(
        self, session: aiohttp.ClientSession, timeout: float = 3.0, pushed: PushedSeries | None = None
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._pushed = pushed

    async def collect(
        self,
        pods: Sequence[Pod],
        ref: ServingRef,
        metrics: Sequence[MetricTarget],
        *,
        role: str | None = None,
        baselines: HistogramBaselines | None = None,
        now: float | None = None,
    ) -> Collected:
        """``pods``: every pod of the target's namespace (the selector picks the entry pods)."""
        out = Collected()
        now = time.time() if now is None else now
        groups: dict[tuple[str, int, LabelSelector], list[tuple[str, PodSource]]] = defaultdict(list)
        for metric in metrics:
            if metric.source is None:
                out.problems.append(f"{metric.name}: no metric source")
            elif isinstance(metric.source, PrometheusSource):
                value = await self._query(metric.name, metric.source, out)
                if value is not None:
                    out.external[metric.name] = value
            else:
                selector = target_selector(ref, role, metric.source.selector)
                groups[(metric.source.uri, metric.source.port, selector)].append((metric.name, metric.source))
        unready: set[str] = set()
        for (uri, port, selector), members in groups.items():
            await self._collect_group(pods, uri, port, selector, members, out, unready, baselines, now)
        out.unready = len(unready)
        return out

    async def _collect_group(
        self,
        pods: Sequence[Pod],
        uri: str,
        port: int,
        selector: LabelSelector,
        members: list[tuple[str, PodSource]],
        out: Collected,
        unready: set[str],
        baselines: HistogramBaselines | None,
        now: float,
    ) -> None:
        names = ", ".join(name for name, _ in members)
        selected = [p for p in pods if selector.matches((p.get("metadata") or {}).get("labels") or {})]
        if not selected:
            out.problems.append(f"{names}: no pods selected")
            return
        ready = []
        for pod in selected:
            if is_disrupted(pod):
                out.problems.append(f"{names}: pod {_pod_name(pod)} failed, restarted or is terminating")
                return
            if is_ready(pod):
                ready.append(pod)
            else:
                unready.add(_pod_name(pod))
        if not ready:
            out.problems.append(f"{names}: no ready pods")
            return
        try:
            per_pod = await asyncio.gather(
                *(self._scrape(p, uri, port, members, baselines, now) for p in ready)
            )
        except (aiohttp.ClientError, TimeoutError, ExpositionError, HistogramError, OSError) as exc:
            SCRAPE_FAILURES.inc()
            out.problems.append(f"{names}: scrape failed: {exc or type(exc).__name__}")
            return
        for values in per_pod:
            for name, value in values.items():
                out.ready[name] = out.ready.get(name, 0.0) + value

    async def _scrape(
        self,
        pod: Pod,
        uri: str,
        port: int,
        members: list[tuple[str, PodSource]],
        baselines: HistogramBaselines | None,
        now: float,
    ) -> dict[str, float]:
        if self._pushed is not None and (series := self._pushed(_pod_name(pod))) is not None:
            known = from_pushed(series, members)
            if known is not None:
                PUSHED_READS.inc()
                return known
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:
            raise ExpositionError(f"pod {_pod_name(pod)} has no IP")
        async with self._session.get(pod_url(ip, port, uri), timeout=self._timeout) as response:
            response.raise_for_status()
            families = parse_families(await response.text())
        start = str((pod.get("status") or {}).get("startTime") or "")
        past = baselines.baseline(_pod_name(pod), start, now) if baselines else {}
        seen: dict[str, HistogramSnapshot] = {}
        values: dict[str, float] = {}
        for name, source in members:
            sampled = extract(families, source.series)
            if sampled is None:
                continue
            if sampled.histogram is not None:
                seen[source.series] = sampled.histogram
                values[name] = quantile(HISTOGRAM_PERCENTILE, sampled.histogram, past.get(source.series))
            else:
                values[name] = sampled.value
        if baselines is not None and seen:
            baselines.record(_pod_name(pod), start, seen, now)
        return values

    async def _query(self, name: str, source: PrometheusSource, out: Collected) -> float | None:
        try:
            return await query_prometheus(self._session, source, self._timeout)
        except (PrometheusError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            out.problems.append(f"{name}: prometheus query failed: {exc or type(exc).__name__}")
            return None


class PrometheusError(ValueError):
    pass


async def query_prometheus(
    session: aiohttp.ClientSession, source: PrometheusSource, limit: aiohttp.ClientTimeout
) -> float:
    """An instant query that must yield a scalar or a one-sample vector (spec §3.3)."""
    if not source.server_url.startswith(("http://", "https://")):
        raise PrometheusError(f"invalid prometheus server URL {source.server_url!r}")
    url = source.server_url.rstrip("/") + "/api/v1/query"
    async with session.get(url, params={"query": source.query}, timeout=limit) as response:
        if response.status >= 400:
            raise PrometheusError(f"prometheus answered HTTP {response.status}")
        body: Mapping[str, Any] = await response.json(content_type=None)
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result") or []
    if kind == "scalar":
        value = float(result[1])
    elif kind == "vector":
        if not isinstance(result, list) or len(result) != 1:
            raise PrometheusError(f"expected a single sample vector, got {len(result or [])} samples")
        value = float(result[0]["value"][1])
    else:
        raise PrometheusError(f"unsupported prometheus query result type {kind!r}")
    if not math.isfinite(value):
        raise PrometheusError(f"prometheus returned {value}")
    return value
