"""Which ModelServers select a pod: one index shared by the watcher (what to publish) and the router
(which endpoint sets a pod joins).

A ModelServer selects the pods of its own namespace whose labels include every pair of its
``workloadSelector.matchLabels`` (Kthena's rule, pods of any owner). Each selector is filed under
its namespace and one of its pairs (the anchor), so finding the selectors of a pod costs one dict
look-up per pod label plus a full check of the few selectors anchored on those labels, however
many pods and ModelServers there are. An empty selector selects nothing (Kthena's webhook refuses
it). In gateway mode InferencePools file their ``spec.selector.matchLabels`` in the same index.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

Labels = Mapping[str, str]
Pair = tuple[str, str]
V = TypeVar("V")


def _match_labels(obj: Mapping[str, Any], selector_field: str) -> dict[str, str]:
    """``spec.<selector_field>.matchLabels`` of an object (``{}`` when absent or malformed)."""
    spec = obj.get("spec") or {}
    selector = spec.get(selector_field) if isinstance(spec, Mapping) else None
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): str(v) for k, v in labels.items()}


def server_match_labels(server: Mapping[str, Any]) -> dict[str, str]:
    """``spec.workloadSelector.matchLabels`` of a ModelServer object."""
    return _match_labels(server, "workloadSelector")


def pool_match_labels(pool: Mapping[str, Any]) -> dict[str, str]:
    """``spec.selector.matchLabels`` of an InferencePool object (gateway mode: pools select pods too)."""
    return _match_labels(pool, "selector")


def selects(selector: tuple[Pair, ...], labels: Labels) -> bool:
    """Every pair of a non-empty ``selector`` is among ``labels``."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector)


def label_selector_query(selector: tuple[Pair, ...]) -> str:
    """The selector as the API server's ``labelSelector`` query value (``k=v,k2=v2``)."""
    return ",".join(f"{k}={v}" for k, v in selector)


class SelectorIndex(Generic[V]):
    """Keyed selectors (``key`` → namespace, matchLabels, value), looked up by a pod's labels."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[str, tuple[Pair, ...], V]] = {}
        self._anchored: dict[tuple[str, str, str], dict[str, V]] = {}
        """(namespace, label key, label value) → key → value, for the selectors anchored there."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def put(self, key: str, namespace: str, match_labels: Labels, value: V) -> None:
        """File (or re-file) ``key``; an empty ``match_labels`` removes it (it selects nothing)."""
        self.remove(key)
        selector = tuple(sorted(match_labels.items()))
        if not selector:
            return
        self._entries[key] = (namespace, selector, value)
        name, label_value = selector[0]
        self._anchored.setdefault((namespace, name, label_value), {})[key] = value

    def remove(self, key: str) -> tuple[str, tuple[Pair, ...]] | None:
        """Drop ``key``; returns its namespace and selector when it was filed."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        namespace, selector, _ = entry
        anchor = (namespace, *selector[0])
        bucket = self._anchored.get(anchor)
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del self._anchored[anchor]
        return namespace, selector

    def selector(self, key: str) -> tuple[str, tuple[Pair, ...]] | None:
        entry = self._entries.get(key)
        return None if entry is None else (entry[0], entry[1])

    def matching(self, namespace: str, labels: Labels) -> Iterator[tuple[str, V]]:
        """(key, value) of every selector in ``namespace`` that selects ``labels``."""
        for name, label_value in labels.items():
            bucket = self._anchored.get((namespace, name, label_value))
            if not bucket:
                continue
            for key, value in bucket.items():
                if selects(self._entries[key][1], labels):
                    yield key, value

    def selects_any(self, namespace: str, labels: Labels) -> bool:
        return next(self.matching(namespace, labels), None) is not None
