"""``ferry describe model NAME``: everything about one ModelBooster, read in one pass."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import Resource, object_subject
from ferry_schemas.runtime.spans import RECONCILE_SERVICES, Span, read_spans, services_of, traces_by_id
from rich.console import RenderableType
from rich.text import Text

from ferry_cli import kube, views
from ferry_cli.objects import age, endpoints

Obj = dict[str, Any]


@dataclass
class Report:
    booster: Obj
    children: dict[str, list[Obj]]
    pods: list[Obj]
    podgroups: list[Obj]
    events: list[Obj]
    trace: list[Span] | None
    trace_source: str
    extra: list[tuple[str, RenderableType]] = field(default_factory=list)

    def sections(self) -> Iterator[tuple[str, RenderableType]]:
        meta = self.booster["metadata"]
        backends = (self.booster.get("spec") or {}).get("backends") or [
            (self.booster.get("spec") or {}).get("backend") or {}
        ]
        kinds = ", ".join(f"{b.get('name')} ({b.get('type')})" for b in backends)
        summary = Text.assemble(
            (meta["name"], "bold"),
            f"  namespace {meta['namespace']}  age {age(self.booster)}  backends {kinds}",
        )
        yield "model", summary
        yield "children", views.children_tree(self.booster, self.children, self.pods, self.podgroups)
        yield "endpoints", views.endpoints_table(endpoints(self.pods, self.children.get("ModelServer", [])))
        yield "events", views.events_table(self.events)
        yield "last reconcile trace", views.trace_view(self.trace, self.trace_source)


APPLIER_RECONCILE = "applier reconcile"


def last_reconcile_trace(spans: list[Span], namespace: str, name: str) -> list[Span] | None:
    """The newest trace that mentions the booster's subject, preferring ones in which the applier
    reconciled the booster's desired set, then ones through all four services.

    Every status write comes back as a MODIFIED event whose trace also passes all four services
    (each only reading it), so without the first preference the newest trace would always be one
    where nothing was applied.
    """
    needle = object_subject(Resource.MODEL_BOOSTERS.value, namespace, name)
    mentioning = [t for t in traces_by_id(spans).values() if any(needle in str(s) for s in t)]
    if not mentioning:
        return None

    def rank(trace: list[Span]) -> tuple[bool, bool, int]:
        applied = any(s.get("name") == APPLIER_RECONCILE for s in trace)
        full = services_of(trace) >= RECONCILE_SERVICES
        return applied, full, max(s.get("start") or 0 for s in trace)

    return max(mentioning, key=rank)


def _trace(trace_file: Path | None, namespace: str, name: str) -> tuple[list[Span] | None, str]:
    if trace_file is None:
        return None, (
            "spans go to your OTLP collector (OTEL_EXPORTER_OTLP_ENDPOINT); "
            "pass --traces or set FERRY_TRACE_FILE to read a span file here"
        )
    if not trace_file.exists():
        return None, f"no span file at {trace_file}"
    found = last_reconcile_trace(read_spans(trace_file), namespace, name)
    return found, (str(trace_file) if found else f"no trace for this model in {trace_file}")


async def gather(k: kube.Kube, name: str, trace_file: Path | None) -> Report:
    booster = await k.get(kube.BOOSTER, name)
    uid = booster["metadata"]["uid"]
    by_uid = f"{L.BOOSTER_MODEL_UID}={uid}"
    lists = await asyncio.gather(*(k.objects_if_installed(kind, by_uid) for kind in kube.BOOSTER_CHILDREN))
    children = {kind.kind: items for kind, items in zip(kube.BOOSTER_CHILDREN, lists, strict=True)}
    serving_names = [s["metadata"]["name"] for s in children["ModelServing"]]
    pods: list[Obj] = []
    podgroups: list[Obj] = []
    if serving_names:
        selector = f"{L.MS_NAME} in ({','.join(serving_names)})"
        pods, podgroups = await asyncio.gather(
            k.pods(selector), k.objects_if_installed(kube.PODGROUP, selector)
        )
    names = {name, *(o["metadata"]["name"] for items in lists for o in items)}
    names |= {o["metadata"]["name"] for o in (*pods, *podgroups)}
    events = views.related_events(await k.events(), names)
    trace, source = _trace(trace_file, k.namespace, name)
    return Report(booster, children, pods, podgroups, events, trace, source)
