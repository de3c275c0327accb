"""What queues status reconciles: the views' own changes, each heard once.

The object view (pods, ModelServings, ModelBoosters) and the pipeline view (apply results, booster
desired sets) follow their streams anyway; their change callbacks name the status keys each change
affects (:func:`~ferry_status.reconciler.keys_for_event`, :func:`~ferry_status.reconciler.keys_for_owner`)
and queue those this replica owns, with the change's trace context (controller-runtime's informer
event → work queue). No durable consumer delivers the same change a second time.

Why nothing is lost without a durable consumer: status is level-triggered — a reconcile reads the
whole state of its key from the views and writes what it computes, so a key needs one reconcile
after its last change, not one per change. The views never skip a message (ordered consumers that
resume after the last one handled, :mod:`ferry_schemas.runtime.follow`); a failed reconcile is
retried by the work queue until it succeeds; and what changed while no replica ran, or while the
replica that owned a key was going away, is caught by :meth:`Triggers.resync`: at start once both
views hold their snapshot (every key the object view holds is queued), on every membership change
(the keys that became this replica's), and periodically (``FERRY_RESYNC_PERIOD``).

Trace context across the start (:mod:`ferry_schemas.runtime.start_traces`): a ModelBooster or
ModelServing heard while the views load whose status has not observed its generation yet is queued
by start's resync in the trace of its last change, so a booster created while status starts is
reconciled in the same trace as its conversion and apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ferry_schemas.bus import ObjectEvent
from ferry_schemas.runtime.start_traces import ObjectKey, StartTraces
from ferry_schemas.runtime.view import Change, ObjectView, trace_context
from ferry_schemas.runtime.workqueue import WorkQueue
from opentelemetry.context import Context

from ferry_status.bus_state import Owner
from ferry_status.reconciler import BOOSTERS, LWS, PIPELINE, SERVINGS, Key, keys_for_event, keys_for_owner

RESYNCED = (SERVINGS, BOOSTERS, LWS)
"""The kinds whose status this service writes from the object view, each held object a key."""


class Triggers:
    """Queues the keys the views' changes name, once :meth:`start` found both views synced.

    ``owns(key)``: whether this replica reconciles ``key`` (every key when it runs alone);
    ``own_write(event)``: whether a change is our own status write coming back (its object is then
    not reconciled for it; its owner still is); ``needs_reconcile(key, cause)``: whether a change (of an
    object of resource ``cause``, or of the pipeline) may end the hold of a held first status (a
    change that cannot queues nothing: its reconcile would only hold it again).
    """

    def __init__(
        self,
        view: ObjectView,
        queue: WorkQueue[Key],
        *,
        own_write: Callable[[ObjectEvent], bool] | None = None,
        owns: Callable[[Key], bool] | None = None,
        needs_reconcile: Callable[[Key, str], bool] | None = None,
    ) -> None:
        self._view = view
        self._queue = queue
        self._own_write = own_write
        self._owns = owns
        self._needs_reconcile = needs_reconcile
        self.live = False
        """False until :meth:`start`: while the views load their snapshots no reconcile may read them
        (a status computed from half the world would be written), and start's resync queues every
        key they then hold."""
        self._start_traces = StartTraces()

    def object_changed(self, change: Change) -> None:
        if not self.live:
            self._start_traces.heard(change)
            return
        if change.same:  # only its resourceVersion moved, nothing status reads
            return
        event = change.event
        keys = keys_for_event(event)
        if keys and self._own_write is not None and self._own_write(event):
            own = (event.resource, event.namespace, event.name)
            keys = [key for key in keys if key != own]
        if keys:
            self._heard(keys, event.resource, change.headers)

    def pipeline_changed(self, stream: str, owner: Owner, headers: Mapping[str, str] | None) -> None:
        if self.live and (keys := keys_for_owner(stream, owner)):
            self._heard(keys, PIPELINE, headers)

    def start(self) -> int:
        """Both views hold their snapshot: queue every key, and from now on every change's keys."""
        self.live = True
        return self.resync(self._start_traces.take())

    def resync(self, contexts: Mapping[ObjectKey, Context] | None = None) -> int:
        """Queue every key the object view holds that this replica owns, each in the trace
        ``contexts`` names for it (else a trace of its own); how many."""
        contexts = contexts or {}
        added = 0
        for kind in RESYNCED:
            for namespace, name in self._view.keys(kind):
                key = (kind, namespace, name)
                added += self._add([key], contexts.get(key))
        return added

    def _heard(self, keys: list[Key], cause: str, headers: Mapping[str, str] | None) -> None:
        """Queue the ``keys`` a change (of an object of resource ``cause``, or of the pipeline) names
        that this replica owns and whose held first status the change may release, in the trace the
        change's ``headers`` carry. The trace context is read off the headers only when a reconcile
        takes it (most changes of a burst join one queued already in the same trace)."""
        wanted = [
            key
            for key in keys
            if (self._owns is None or self._owns(key))
            and (self._needs_reconcile is None or self._needs_reconcile(key, cause))
        ]
        if not wanted:
            return
        queue = self._queue
        context = trace_context(headers) if any(queue.wants_context(key) for key in wanted) else None
        for key in wanted:
            queue.add(key, context)

    def _add(self, keys: list[Key], context: Context | None) -> int:
        added = 0
        for key in keys:
            if self._owns is None or self._owns(key):
                self._queue.add(key, context)
                added += 1
        return added
