"""Where a booster's time goes between its creation and its pod being stored, from the services' spans.

Every reconcile is one OpenTelemetry trace and the services write their spans to ``FERRY_TRACE_FILE``
(:func:`ferry_schemas.runtime.spans.read_spans`). A booster reaches its pod through two reconciles,
the booster's (converter → applier → ModelServing, ModelServer, ModelRoute) and its ModelServing's
(watcher → converter → applier → ControllerRevision, PodGroup, Service, Pod). Each :data:`MILESTONES`
entry is the first span of one step for that booster's objects; a stage is the time from the previous
milestone to this one, so the stages of one booster add up to its "children stored" latency. A
stage's figure is the wait in front of a service (a consumer's fetch, a work queue) or the work it
did (its API requests).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ferry_schemas.runtime.spans import Span

SpanKey = tuple[str, str, str]
"""(step, kind, object name): ``("process", "ferry-applier desired", "m0001-main")``, ..."""


def span_key(span: Span) -> SpanKey | None:
    """What a span is a step of, or None for the spans no milestone uses."""
    name: str = span.get("name", "")
    attributes = span.get("attributes") or {}
    words = name.split(" ")
    if words[0] == "watch" and len(words) >= 2:
        return ("watch", words[1], str(attributes.get("ferry.object.name", "")))
    if len(words) == 3 and words[1] == "process":  # "<service> process <subject>"
        parts = words[2].split(".")  # ferry.<obj|desired|applied>.<resource>.<namespace>.<name>
        if len(parts) == 5:
            return ("process", f"{words[0]} {parts[1]} {parts[2]}", parts[4])
    if name.startswith("converter convert "):
        parts = words[2].split(".")
        if len(parts) == 5:
            return ("convert", parts[2], parts[4])
    if name == "applier reconcile":
        return ("reconcile", str(attributes.get("ferry.owner.kind")), str(attributes.get("ferry.owner.name")))
    if words[0] == "k8s" and len(words) == 3:
        return ("k8s", words[2], str(attributes.get("k8s.name", "")))
    return None


@dataclass(frozen=True)
class Milestone:
    label: str
    """The stage that ends here (the time since the previous milestone)."""
    step: str
    kind: str
    of: Callable[[str], str]
    """Booster name → the object's name."""
    at: str = "start"
    """The span's ``start`` or ``end``."""


def _booster(name: str) -> str:
    return name


def _serving(name: str) -> str:
    return f"{name}-main"


def _pod(name: str) -> str:
    return f"{name}-main-0-leader-0-0"


MILESTONES = (
    Milestone("API server -> watcher sees booster", "watch", "modelboosters", _booster),
    Milestone("watcher publishes (stream ack)", "watch", "modelboosters", _booster, "end"),
    Milestone("converter view + queue", "convert", "modelboosters", _booster),
    Milestone("converter renders + publishes", "convert", "modelboosters", _booster, "end"),
    Milestone("applier fetch (booster desired)", "process", "ferry-applier desired modelboosters", _booster),
    Milestone("applier queue + desired get + view", "reconcile", "ModelBooster", _booster),
    Milestone("applier applies ModelServing", "k8s", "ModelServing", _serving, "end"),
    Milestone("API server -> watcher sees serving", "watch", "modelservings", _serving),
    Milestone("converter view + queue (serving)", "convert", "modelservings", _serving),
    Milestone("converter renders + publishes", "convert", "modelservings", _serving, "end"),
    Milestone("applier fetch (serving desired)", "process", "ferry-applier desired modelservings", _serving),
    Milestone("applier queue + desired get + view", "reconcile", "ModelServing", _serving),
    Milestone("applier: revision, group, service", "k8s", "Pod", _pod),
    Milestone("applier creates the pod", "k8s", "Pod", _pod, "end"),
)


def first_times(spans: list[Span]) -> dict[tuple[SpanKey, str], float]:
    """(span key, start|end) → the earliest such time (seconds since the epoch)."""
    first: dict[tuple[SpanKey, str], float] = {}
    for span in spans:
        key = span_key(span)
        if key is None:
            continue
        for at in ("start", "end"):
            t = (span.get(at) or 0) / 1e9
            if t and t < first.get((key, at), float("inf")):
                first[(key, at)] = t
    return first


def booster_stages(
    spans: list[Span], added: dict[str, float], done: dict[str, float]
) -> dict[str, list[float]]:
    """Stage label → seconds, one value per booster whose every milestone was found.

    ``added`` and ``done`` are when the benchmark's watches saw each booster stored and its last child
    stored (seconds since the epoch); the first stage starts at ``added``, the last ends at ``done``.
    Labels are made unique by position (``"12 converter renders + publishes"``).
    """
    first = first_times(spans)
    labels = [f"{i + 1:>2} {m.label}" for i, m in enumerate(MILESTONES)] + [
        f"{len(MILESTONES) + 1:>2} bench watch sees the rest"
    ]
    stages: dict[str, list[float]] = {label: [] for label in labels}
    for name, t0 in added.items():
        if name not in done:
            continue
        times = [t0]
        for m in MILESTONES:
            t = first.get(((m.step, m.kind, m.of(name)), m.at))
            if t is None:
                break
            times.append(t)
        else:
            times.append(done[name])
            for label, before, after in zip(labels, times[:-1], times[1:], strict=True):
                stages[label].append(after - before)
    return stages


def print_stages(stages: dict[str, Any], n: int, namespaces: int) -> None:
    """p50 / p99 / mean seconds of each stage, and the p50 of the time since the booster was stored."""
    counted = len(next(iter(stages.values()), []))
    print()
    print(
        f"N={n}/{namespaces}ns: where the time goes from booster stored to pod stored "
        f"(the services' spans, {counted} boosters)"
    )
    print(f"{'stage (ends when)':<44} {'p50':>7} {'p99':>7} {'mean':>7} {'since stored p50':>17}")
    if not counted:
        print("(no booster had a span for every milestone: a span MILESTONES looks for is no longer written)")
        return
    cumulative = [0.0] * counted
    for label, values in stages.items():
        cumulative = [c + v for c, v in zip(cumulative, values, strict=True)]
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        print(
            f"{label:<44} {statistics.median(values):>7.2f} {p99:>7.2f} {statistics.fmean(values):>7.2f} "
            f"{statistics.median(cumulative):>17.2f}"
        )
