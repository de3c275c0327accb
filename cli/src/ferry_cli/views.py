"""Rich renderables for ``ferry get`` and ``ferry describe model``, built from plain objects.

Pure functions of what the API server returned, so they are unit-tested without a cluster.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.runtime.spans import Span, render_tree
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ferry_cli.objects import (
    Endpoint,
    age,
    condition_status,
    conditions,
    endpoints,
    is_ready,
    pod_phase,
    replicas,
)

Obj = dict[str, Any]


def _table(*columns: str) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column in ("NAME", "AGE", "LAST SEEN"), overflow="fold")
    return table


def _status_text(value: str) -> Text:
    return Text(value, style={"True": "green", "False": "red"}.get(value, "yellow"))


def _ready_count(found: list[Endpoint]) -> str:
    return f"{sum(e.ready for e in found)}/{len(found)}"


def models_table(boosters: list[Obj], pods: list[Obj], now: datetime | None = None) -> Table:
    """NAME, ACTIVE, FAILED, REPLICAS (available/desired), ENDPOINTS (ready/entry pods), AGE."""
    by_model: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        by_model[(pod["metadata"].get("labels") or {}).get(L.BOOSTER_MODEL_NAME, "")].append(pod)
    table = _table("NAME", "ACTIVE", "FAILED", "REPLICAS", "ENDPOINTS", "AGE")
    for booster in boosters:
        name = booster["metadata"]["name"]
        table.add_row(
            name,
            _status_text(condition_status(booster, "Active")),
            _status_text(condition_status(booster, "Failed")) if conditions(booster) else Text("-"),
            replicas(booster),
            _ready_count(endpoints(by_model.get(name, []), [])),
            age(booster, now),
        )
    return table


def servings_table(
    servings: list[Obj], pods: list[Obj], servers: list[Obj], now: datetime | None = None
) -> Table:
    """NAME, MODEL, READY (available/desired), UPDATED, ENDPOINTS (ready addresses), AGE."""
    by_serving: dict[str, list[Obj]] = defaultdict(list)
    for pod in pods:
        by_serving[(pod["metadata"].get("labels") or {}).get(L.MS_NAME, "")].append(pod)
    table = _table("NAME", "MODEL", "READY", "UPDATED", "ENDPOINTS", "AGE")
    for serving in servings:
        meta = serving["metadata"]
        found = endpoints(by_serving.get(meta["name"], []), servers)
        ready = [e.address for e in found if e.ready]
        table.add_row(
            meta["name"],
            (meta.get("labels") or {}).get(L.BOOSTER_MODEL_NAME, "-"),
            replicas(serving),
            str((serving.get("status") or {}).get("updatedReplicas", 0)),
            ", ".join(ready) if ready else f"none ready ({len(found)} entry pods)",
            age(serving, now),
        )
    return table


def _targets(route: Obj) -> str:
    parts = []
    for rule in (route.get("spec") or {}).get("rules") or []:
        for target in rule.get("targetModels") or []:
            name = target.get("modelServerName") or f"external:{target.get('externalModelProviderName')}"
            weight = target.get("weight")
            parts.append(f"{name}" + (f" ({weight})" if weight is not None and weight != 100 else ""))
    return ", ".join(parts) or "-"


def routes_table(routes: list[Obj], now: datetime | None = None) -> Table:
    """NAME, MODEL, LORAS, TARGETS (ModelServers with weights), RATE LIMIT, AGE."""
    table = _table("NAME", "MODEL", "LORAS", "TARGETS", "RATE LIMIT", "AGE")
    for route in routes:
        spec = route.get("spec") or {}
        limit = spec.get("rateLimit") or {}
        limit_text = "-"
        if limit:
            tokens = [f"in {limit['inputTokensPerUnit']}" if limit.get("inputTokensPerUnit") else ""]
            tokens.append(f"out {limit['outputTokensPerUnit']}" if limit.get("outputTokensPerUnit") else "")
            limit_text = f"{' '.join(t for t in tokens if t)}/{limit.get('unit', 'second')}"
        table.add_row(
            route["metadata"]["name"],
            spec.get("modelName") or "-",
            ", ".join(spec.get("loraAdapters") or []) or "-",
            _targets(route),
            limit_text,
            age(route, now),
        )
    return table


# --------------------------------------------------------------------------- describe


def _conditions_text(obj: Obj) -> Text:
    text = Text()
    for i, condition in enumerate(conditions(obj)):
        if i:
            text.append("  ")
        status = str(condition.get("status", "Unknown"))
        text.append(f"{condition.get('type')}=", style="bold")
        text.append(status, style={"True": "green", "False": "red"}.get(status, "yellow"))
        if status != "True" and (reason := condition.get("reason")):
            text.append(f" ({reason})", style="dim")
    return text or Text("no conditions yet", style="dim")


def _label(kind: str, obj: Obj, detail: str = "") -> Text:
    text = Text.assemble((f"{kind}/", "cyan"), (obj["metadata"]["name"], "bold"))
    if detail:
        text.append(f"  {detail}", style="dim")
    return text


def _pod_line(pod: Obj) -> Text:
    labels = pod["metadata"].get("labels") or {}
    ip = (pod.get("status") or {}).get("podIP") or "no IP"
    ready = is_ready(pod)
    text = _label("Pod", pod, f"{labels.get(L.MS_ROLE, '')} {ip}")
    text.append(f"  {pod_phase(pod)}", style="green" if ready else "yellow")
    text.append("  Ready" if ready else "  NotReady", style="green" if ready else "red")
    return text


def children_tree(
    booster: Obj, children: dict[str, list[Obj]], pods: list[Obj], podgroups: list[Obj]
) -> Tree:
    """The booster, its children (by kind) with their conditions, and each serving's PodGroups and pods."""
    tree = Tree(Text.assemble(_label("ModelBooster", booster), "  ", _conditions_text(booster)))
    for serving in children.get("ModelServing", []):
        name = serving["metadata"]["name"]
        node = tree.add(Text.assemble(_label("ModelServing", serving, f"replicas {replicas(serving)}")))
        node.add(_conditions_text(serving))
        for group in podgroups:
            if (group["metadata"].get("labels") or {}).get(L.MS_NAME) == name:
                spec = group.get("spec") or {}
                phase = (group.get("status") or {}).get("phase", "")
                node.add(_label("PodGroup", group, f"minMember {spec.get('minMember', '?')} {phase}".strip()))
        for pod in pods:
            if (pod["metadata"].get("labels") or {}).get(L.MS_NAME) == name:
                node.add(_pod_line(pod))
    for server in children.get("ModelServer", []):
        spec = server.get("spec") or {}
        port = (spec.get("workloadPort") or {}).get("port", "?")
        tree.add(_label("ModelServer", server, f"{spec.get('inferenceEngine', '?')} port {port}"))
    for route in children.get("ModelRoute", []):
        spec = route.get("spec") or {}
        tree.add(_label("ModelRoute", route, f"model {spec.get('modelName') or '-'} → {_targets(route)}"))
    for kind in ("AutoscalingPolicy", "AutoscalingPolicyBinding"):
        for obj in children.get(kind, []):
            tree.add(_label(kind, obj))
    if not any(children.values()):
        tree.add(
            Text("no children yet (is Ferry running? `kubectl -n ferry-system get pods`)", style="yellow")
        )
    return tree


def endpoints_table(found: list[Endpoint]) -> RenderableType:
    if not found:
        return Text("no entry pods yet", style="dim")
    table = _table("POD", "SERVING", "ROLE", "ADDRESS", "READY")
    for e in found:
        table.add_row(e.pod, e.serving, e.role, e.address, _status_text(str(e.ready)))
    return table


def _event_time(event: Obj) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("series") or {}).get("lastObservedTime")
        or event["metadata"].get("creationTimestamp")
        or ""
    )


def related_events(events: list[Obj], names: set[str], limit: int = 15) -> list[Obj]:
    """The newest ``limit`` events whose object is one of ``names``, oldest first."""
    related = [
        e for e in events if (e.get("involvedObject") or e.get("regarding") or {}).get("name") in names
    ]
    return sorted(related, key=_event_time)[-limit:]


def _event_age(event: Obj, now: datetime | None) -> str:
    """kubectl's LAST SEEN: how long ago, as ``age`` reads it."""
    stamp = _event_time(event)
    return age({"metadata": {"creationTimestamp": stamp}}, now) if stamp else "?"


def events_table(events: list[Obj], now: datetime | None = None) -> RenderableType:
    if not events:
        return Text("no events", style="dim")
    table = _table("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")
    for event in events:
        involved = event.get("involvedObject") or event.get("regarding") or {}
        count = event.get("count") or (event.get("series") or {}).get("count") or 1
        kind = str(event.get("type", ""))
        table.add_row(
            _event_age(event, now),
            Text(kind, style="red" if kind == "Warning" else ""),
            str(event.get("reason", "")) + (f" (x{count})" if count > 1 else ""),
            f"{involved.get('kind', '')}/{involved.get('name', '')}",
            str(event.get("message") or event.get("note") or ""),
        )
    return table


def trace_view(trace: list[Span] | None, source: str) -> RenderableType:
    if trace is None:
        return Text(source, style="dim")
    first = min(trace, key=lambda s: s.get("start") or 0)
    return Group(Text(f"trace {first['traceId']} ({source})", style="dim"), Text(render_tree(trace)))
