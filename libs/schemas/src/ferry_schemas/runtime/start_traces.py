"""Which trace a reconcile queued by a start-up resync belongs to.

A view-driven service queues nothing while its view loads its snapshot (a reconcile must not read
half the world) and queues every key once it holds it, without the trigger's trace context. An
object changed while the service was starting (a booster created while the converter or status
came up) would then be reconciled in a trace of its own, cut off from the watcher's. So while the
view loads, :class:`StartTraces` keeps the trace context of the last change heard for each object
whose status has not observed its generation yet (``status.observedGeneration`` behind
``metadata.generation``: new or edited, its reconcile still due), and the start-up resync queues
those keys in it. Every other key resynced (its status already caught up: hours-old history) starts
a trace of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from opentelemetry.context import Context

from ferry_schemas.bus import Resource
from ferry_schemas.runtime.view import Change

ObjectKey = tuple[str, str, str]
"""(resource, namespace, name)."""
GENERATION_OBSERVED = (Resource.MODEL_BOOSTERS, Resource.MODEL_SERVINGS)
"""The kinds whose status records the generation it was computed for (``status.observedGeneration``)."""


def status_observed(obj: Mapping[str, object]) -> bool:
    """Whether ``obj``'s status was computed for its current generation."""
    meta = obj.get("metadata")
    status = obj.get("status")
    generation = meta.get("generation") if isinstance(meta, Mapping) else None
    observed = status.get("observedGeneration") if isinstance(status, Mapping) else None
    return isinstance(observed, int) and isinstance(generation, int) and observed >= generation


class StartTraces:
    """Trace contexts heard while a view loads, for the ``resources`` whose status records the
    generation it observed; :meth:`take` hands them to the start-up resync."""

    def __init__(self, resources: Collection[str] = GENERATION_OBSERVED) -> None:
        self._resources = frozenset(resources)
        self._contexts: dict[ObjectKey, Context] = {}

    def heard(self, change: Change) -> None:
        """A change the view applied before the service went live."""
        event = change.event
        if event.resource not in self._resources:
            return
        key = (event.resource, event.namespace, event.name)
        context = None if event.deleted or status_observed(event.object) else change.context
        if context is None:
            self._contexts.pop(key, None)
        else:
            self._contexts[key] = context

    def take(self) -> dict[ObjectKey, Context]:
        """The contexts kept (forgotten here: they serve one start)."""
        contexts, self._contexts = self._contexts, {}
        return contexts
