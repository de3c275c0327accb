"""The applier service: owners' desired sets and their children's changes in, one reconcile per owner.

Controller-runtime's shape with the bus as the informer:

* an :class:`~ferry_schemas.runtime.view.ObjectView` of every kind the applier writes (snapshot of
  ``FERRY_OBJECTS``, then changes) is what each reconcile reads — no LIST, no GET;
* the view's change callback is the informer's event handler: a change or deletion of an owned
  object re-queues its owner (so drift is repaired), on the replica that owns the owner
  (:class:`~ferry_schemas.runtime.members.Members`: rendezvous hashing over the live replicas). Each
  object message reaches the applier once, and nothing is acked for it: what changed while no
  applier ran is repaired by the resyncs, level-triggered (README, "One delivery");
* the durable consumer ``applier-desired`` on ``ferry.desired.>``, shared by replicas, names owners
  whose desired set changed (work: acked once reconciled);
* one :class:`~ferry_schemas.runtime.workqueue.WorkQueue` keyed by owner coalesces them and retries a
  failed reconcile forever with capped back-off while the message stays in progress;
* a periodic jittered resync (and one at start) re-queues every owner of the ``FERRY_DESIRED``
  snapshot this replica owns; after the live replicas changed, the owners it took over.

A reconcile takes the desired set the consumer delivered (or, when none waits, reads the owner's
latest from ``FERRY_DESIRED``), waits until the view holds its own previous writes, records the set
in the owner's KV record and takes its lease in the same write (one reconcile per owner across
replicas; ``generations.py``), applies, publishes the result and records Events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import (
    APPLIED_GENERATIONS_BUCKET,
    DESIRED_PREFIX,
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_STREAM,
    RESULTS_STREAM,
    ApplyResult,
    DesiredSet,
    ObjectEvent,
    Resource,
    desired_subject,
    encode_token,
    kv_key,
    parse_subject,
)
from ferry_schemas.runtime.consumer import BadMessage, DurableConsumer
from ferry_schemas.runtime.events import EventRecorder
from ferry_schemas.runtime.jetstream import (
    connect,
    delete_durables,
    key_value,
    last_subjects,
    wait_for_streams,
)
from ferry_schemas.runtime.lifecycle import serve
from ferry_schemas.runtime.members import ALL, Members, members_bucket
from ferry_schemas.runtime.members import owner as member_owning
from ferry_schemas.runtime.probes import ProbeServer
from ferry_schemas.runtime.resync import Resync
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.view import Change, ObjectView
from ferry_schemas.runtime.workqueue import Backoff, WorkQueue
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from pydantic import ValidationError

from ferry_applier.explain import record_events, record_failure
from ferry_applier.generations import OwnerRecords
from ferry_applier.kube import WRITES, KubeClient, Written, load_api_client
from ferry_applier.lease import LEASES_BUCKET, OwnerLeases
from ferry_applier.metrics import FAILURES, MESSAGES, RECONCILE_SECONDS
from ferry_applier.pending import PendingPodEvents
from ferry_applier.projections import PROJECTIONS
from ferry_applier.reconciler import OwnerRef, Reconciler
from ferry_applier.settings import ApplierSettings
from ferry_applier.triggers import owner_of
from ferry_applier.workload.engine import WorkloadEngine
from ferry_applier.workload.render import read_spec, render_group
from ferry_applier.workload.state import pod_state

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_applier")

VIEWED = (
    Resource.MODEL_SERVINGS,
    Resource.MODEL_SERVERS,
    Resource.MODEL_ROUTES,
    Resource.AUTOSCALING_POLICIES,
    Resource.AUTOSCALING_POLICY_BINDINGS,
    Resource.POD_GROUPS,
    Resource.PODS,
    Resource.SERVICES,
    Resource.CONTROLLER_REVISIONS,
)
"""Every kind the applier writes: its reconciles read them from the view."""
PODS_OWNERS = frozenset({Resource.MODEL_SERVINGS.value, Resource.LEADER_WORKER_SETS.value})
"""Owners whose reconcile creates pods: they take a free worker before the owners above them."""
SELECTED_BY = frozenset({L.MS_NAME, L.BOOSTER_MODEL_UID})
"""The label keys the applier's view indexes: what its reconciles select children by (a ModelServing's
name; a booster's uid, beside the managed-by label every booster child carries). A selector naming
no indexed key is answered by filtering the namespace's objects, so the index holds one entry per
object instead of one per label."""
CHANGES = frozenset({"created", "applied", "pruned", "deleted"})
"""Child actions that are news: a result holding one is published without reading the last one."""
RECORD_LEASE = b"record-lease"
"""This release's membership mark: it holds owners by their record (``generations.py``). While a live
replica lacks it (the previous release, during a rolling upgrade) the legacy lease is taken too."""
VIEW_TRIGGER = "view"
"""The ``consumer`` label of object changes in the applier's metrics (they come from the view)."""
RETIRED_DURABLES = ((OBJECTS_STREAM, "applier-objects"),)
"""Durable consumers an earlier applier read (object changes now come from the view): deleted at
start, so the server stops keeping their state and pending counts."""


class Applier:
    """Binds the view and the consumers and runs the reconciles until stopped."""

    def __init__(
        self, settings: ApplierSettings, kube: KubeClient, events: EventRecorder | None = None
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.events = events
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self.view: ObjectView | None = None
        self.queue: WorkQueue[OwnerRef] = WorkQueue(
            "applier",
            self._reconcile,
            workers=max(1, settings.concurrency),
            backoff=Backoff(base=settings.backoff, cap=settings.backoff_max),
            priority=owner_priority,
        )
        self._reconciler: Reconciler | None = None
        self._records: OwnerRecords | None = None
        self._leases: OwnerLeases | None = None
        """The previous release's lease, taken beside the record while one of its replicas may run."""
        self._members: Members | None = None
        self._consumers: list[DurableConsumer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        """Membership resyncs and releases of kept records, run beside the queue (cancelled at stop)."""
        self._taken_under: frozenset[str] | None = None
        """The live replicas this one last took its owners under (None: it took every owner)."""
        self._pod_events = PendingPodEvents()
        """Pod events per owner, handled (recovery) by the owner's next reconcile."""
        self._delivered: dict[OwnerRef, tuple[bytes, int]] = {}
        """Per owner, the newest desired set (its bytes and stream sequence) the desired consumer
        delivered and no reconcile took yet: the reconcile applies it without reading
        ``FERRY_DESIRED`` when the generation guard allows (``generations.py``). Its message is in
        flight meanwhile, so the bytes cost nothing."""
        self._written: dict[OwnerRef, list[Written]] = {}
        self._writing: dict[OwnerRef, list[Written]] = {}
        """What each owner's reconcile in flight has written so far: an echo of a write can arrive
        before its reconcile ends (the reconcile still records and publishes), and is no drift."""
        """What each owner's last reconcile wrote: the next one waits until the view shows it."""
        self._heard: dict[OwnerRef, list[Change]] = {}
        """Changes of an owner's objects heard while its reconcile was writing, not (yet) known as
        its own writes: the echo of a write can come through the view before the write's answer
        (which names the version it stored) reaches the reconcile. Decided when the reconcile ends,
        when every answer is in: an echo is dropped, anything else re-queues the owner then (as a
        change heard mid-reconcile always did: the queue runs it after the one in flight)."""
        self._stopping = asyncio.Event()
        self.resynced = asyncio.Event()
        """Set once the start-up resync queued every owner of the FERRY_DESIRED snapshot."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def desired_durable(self) -> str:
        """The durable name; it carries the namespace filter (a durable's filter cannot change on 2.9)."""
        return durable_name(self.settings.desired_consumer, self.settings.namespace)

    @property
    def durables(self) -> list[tuple[str, str]]:
        """(stream, durable consumer) of every consumer this applier reads."""
        return [(DESIRED_STREAM, self.desired_durable)]

    @property
    def members(self) -> Members | None:
        return self._members

    def ready(self) -> bool:
        return (
            self._nc is not None
            and self._nc.is_connected
            and self.view is not None
            and self.view.synced
            and bool(self._consumers)
            and all(c.bound.is_set() for c in self._consumers)
        )

    async def start(self) -> None:
        s = self.settings
        self._nc = await connect(s.nats_url, f"ferry-{s.service}")
        self._js = self._nc.jetstream()
        if not await wait_for_streams(
            self._js, (DESIRED_STREAM, OBJECTS_STREAM, RESULTS_STREAM), self._stopping
        ):
            return
        await delete_retired_durables(self._js, s.namespace)
        kv = await key_value(self._js, APPLIED_GENERATIONS_BUCKET)
        holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        leases = await key_value(self._js, LEASES_BUCKET)
        self._leases = OwnerLeases(self._nc, leases, holder, ttl=s.ack_wait)
        scope = encode_token(s.namespace) if s.namespace else ALL  # appliers that see the same owners
        self._members = members = Members(
            self._js, members_bucket(s.service), holder, ttl=s.member_ttl, scope=scope, mark=RECORD_LEASE
        )
        self._records = OwnerRecords(self._nc, kv, holder, ttl=s.member_ttl, alone=lambda: members.alone)
        await self._members.start()
        self._members.on_change(self._on_members_changed)
        self._members.on_others(self._on_others_changed)
        # ModelServings keep managedFields: whether the autoscaler owns replicas is read from them
        self.view = ObjectView(
            self._js,
            VIEWED,
            namespace=s.namespace,
            keep_managed_fields=(Resource.MODEL_SERVINGS,),
            project=PROJECTIONS,
            pack=True,
            indexed_labels=SELECTED_BY,
        )
        engine = WorkloadEngine(self.kube, self.view, render_group, read_spec)
        self._reconciler = Reconciler(self.kube, self.view, engine)
        self.view.on_change(self._on_change)
        await self.view.start()
        desired_filter = subject_filter(s.namespace)
        self._consumers = [
            self._consumer(DESIRED_STREAM, self.desired_durable, desired_filter, self._on_desired),
        ]
        self._tasks = [asyncio.create_task(c.run(), name=c.durable) for c in self._consumers]
        self._tasks.append(asyncio.create_task(self._resync_at_start(), name="applier-first-resync"))
        resync = Resync(s.service, s.resync_period, self.resync)
        self._tasks.append(asyncio.create_task(resync.run(), name="applier-resync"))
        if self.events is not None:
            self.events.start(idle_for=self.queue.idle_for)  # Events yield to reconciles
        log.info("applier consuming %s; object changes from its view", desired_filter)

    def _consumer(self, stream: str, durable: str, subject: str, handler: Any) -> DurableConsumer:
        assert self._nc is not None
        assert self._js is not None
        s = self.settings
        return DurableConsumer(
            self._nc,
            self._js,
            service=s.service,
            stream=stream,
            durable=durable,
            subject=subject,
            handler=handler,
            max_deliver=s.max_deliver,
            ack_wait=s.ack_wait,
            max_ack_pending=s.max_ack_pending,
            batch=s.batch,
        )

    async def stop(self) -> None:
        self._stopping.set()
        tasks = [*self._tasks, *self._background]
        await cancel_all(tasks)  # consumers' fetch loops: a NATS request can swallow one cancel
        await self.queue.stop()
        if self._records is not None:
            with contextlib.suppress(Exception):  # NATS away: they expire after the members' TTL
                await self._records.release_kept()
        if self._members is not None:
            await self._members.stop()  # the other replicas take this one's owners over at once
        if self.view is not None:
            await self.view.stop()
        if self.events is not None:
            await self.events.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()

    # ------------------------------------------------------------------ triggers

    async def _on_desired(self, msg: Msg, context: Context) -> None:
        """A new desired set: reconcile its owner from the newest set delivered (or the latest)."""
        try:  # not kept: the set is parsed again when reconciled (a parsed set held by every
            # message in flight while it waits, ~27 KB each, raised the peak RSS by 8 MiB at 200)
            own_subject = DesiredSet.model_validate_json(msg.data).subject == msg.subject
            parts = parse_subject(msg.subject)
        except (ValidationError, ValueError) as exc:
            raise BadMessage(f"not a DesiredSet: {exc}") from exc
        MESSAGES.labels(self.desired_durable, "desired").inc()
        key = (parts.resource, parts.namespace, parts.name)
        if own_subject:
            self._keep_delivered(key, msg.data, msg.metadata.sequence.stream)
        await self.queue.submit(key, context)

    def _keep_delivered(self, key: OwnerRef, data: bytes, sequence: int) -> None:
        """Keep ``data`` for the owner's next reconcile unless a later message of it waits already."""
        held = self._delivered.get(key)
        if held is None or held[1] < sequence:
            self._delivered[key] = (data, sequence)

    def _on_change(self, change: Change) -> None:
        """A viewed object changed, and the view holds the change: re-queue its owner (the informer's
        event handler), on the replica that owns it, unless the change cannot matter to it."""
        assert self.view is not None
        if not self.view.synced:
            return  # the snapshot: every owner is queued by the start-up resync once it is in
        event = change.event
        owner = owner_of(event)
        if owner is None:
            MESSAGES.labels(VIEW_TRIGGER, "unowned").inc()
            return
        if not self._owns(owner):
            MESSAGES.labels(VIEW_TRIGGER, "other-replica").inc()
            return
        if self._own_write(owner, event):
            MESSAGES.labels(VIEW_TRIGGER, "own-write").inc()
            return  # the echo of this replica's own last write: nothing drifted
        if change.same:
            MESSAGES.labels(VIEW_TRIGGER, "unchanged").inc()
            return  # a status write or a relist: nothing a reconcile reads (the view keeps) changed
        if owner in self._writing:
            self._heard.setdefault(owner, []).append(change)  # an echo whose answer is not in yet?
            return
        self._queue_change(owner, change)

    def _queue_change(self, owner: OwnerRef, change: Change) -> None:
        """Re-queue ``owner`` for a change of one of its objects that is news to it."""
        event = change.event
        if event.resource == Resource.PODS:  # news of a pod: kept whole for the owner's recovery
            self._pod_events.add(owner, event)
        MESSAGES.labels(VIEW_TRIGGER, event.resource).inc()
        self.queue.add(owner, change.context)

    def _decide_heard(self, owner: OwnerRef) -> None:
        """The owner's reconcile ended: the changes heard while it wrote are echoes or news now."""
        for change in self._heard.pop(owner, ()):
            if self._own_write(owner, change.event):
                MESSAGES.labels(VIEW_TRIGGER, "own-write").inc()
            else:
                self._queue_change(owner, change)

    def _owns(self, owner: OwnerRef) -> bool:
        return self._members is None or self._members.owns(kv_key(*owner))

    def _on_members_changed(self) -> None:
        """The live replicas changed: queue the owners that became this replica's (a resync of those
        only; the periodic one still queues all). A replica that joined takes nothing from this one
        but what it gives up, so only a departure queues anything here."""
        assert self._members is not None
        before, self._taken_under = self._taken_under, self._members.live
        self._spawn(self._resync_logged(before), "applier-members-resync")

    def _on_others_changed(self) -> None:
        """Another replica (of any scope) appeared or went: if this one kept owner records held while
        it ran alone, the other may want them now."""
        assert self._members is not None
        assert self._records is not None
        if not self._members.alone and self._records.kept:
            self._spawn(self._records.release_kept(), "applier-release-kept")

    def _spawn(self, work: Coroutine[Any, Any, object], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync_logged(self, before: frozenset[str] | None) -> None:
        try:
            log.info("membership change: resync queued %d owners taken over", await self.resync(before))
        except Exception as exc:  # the periodic resync comes next
            log.warning("membership change: resync failed: %s", exc)

    async def resync(self, before: frozenset[str] | None = None) -> int:
        """Queue every owner the FERRY_DESIRED snapshot names that this replica owns (with ``before``,
        a former live set: only those it did not own under that set), after taking the failed pods of
        its owners for their recovery."""
        assert self._js is not None
        self._adopt_failed_pods()
        me = None if self._members is None else self._members.member_id
        owners = 0
        for subject in await last_subjects(self._js, DESIRED_STREAM, subject_filter(self.settings.namespace)):
            parts = parse_subject(subject)
            key = (parts.resource, parts.namespace, parts.name)
            if self._owns(key) and (before is None or member_owning(kv_key(*key), before) != me):
                self.queue.add(key)
                owners += 1
        return owners

    def _adopt_failed_pods(self) -> None:
        """A failed pod of an owner of this replica's waits for its owner's recovery whether or not
        its change was seen here: it failed while no applier ran (object changes are not kept for an
        applier that is away) or while another replica owned its owner."""
        assert self.view is not None
        for pod in self.view.all(Resource.PODS):
            state = pod_state(pod)
            if not state.failed or state.terminating:
                continue
            event = ObjectEvent.from_object("SYNC", Resource.PODS, pod)
            owner = owner_of(event)
            if owner is not None and self._owns(owner):
                self._pod_events.add(owner, event)

    async def _resync_at_start(self) -> None:
        """Once the view is loaded (and who else runs is known, for a while): what changed while no
        applier ran is repaired now, not at the first periodic resync."""
        assert self.view is not None
        assert self._members is not None
        await self.view.wait_synced()
        with contextlib.suppress(TimeoutError):  # not known by then: this replica takes every owner
            await asyncio.wait_for(self._members.wait_known(), self._members.ttl)
        self._taken_under = self._members.live if self._members.known else None
        while True:
            try:
                count = await self.resync()
                log.info("start-up resync queued %d owners", count)
                self.resynced.set()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("start-up resync failed, retrying: %s", exc)
                await asyncio.sleep(2.0)

    # ------------------------------------------------------------------ the reconcile

    async def _reconcile(self, key: OwnerRef, context: Context | None) -> None:
        assert self._reconciler is not None
        assert self.view is not None
        assert self._leases is not None
        assert self._records is not None
        resource, namespace, name = key

        async def last() -> tuple[DesiredSet, int] | None:
            return await self._last_desired(resource, namespace, name)

        delivered = self._delivered.pop(key, None)
        found: tuple[DesiredSet, int] | None
        if delivered is not None:  # validated by _on_desired
            found = DesiredSet.model_validate_json(delivered[0]), delivered[1]
        else:
            found = await last()
        if found is None:
            self._pod_events.drop(key)
            self._written.pop(key, None)
            return
        desired, sequence = found
        await self.view.wait_until(lambda: self._caught_up(key), limit=self.settings.view_wait)
        events = self._pod_events.take(key)
        writes: list[Written] = []
        token = WRITES.set(writes)
        self._writing[key] = writes
        with (
            self._span("applier reconcile", context, desired) as span,
            RECONCILE_SECONDS.labels(self.desired_durable).time(),
        ):
            try:
                async with contextlib.AsyncExitStack() as held:
                    wait, record_key = self.settings.ack_wait / 2, kv_key(*key)
                    if self._legacy_lease_needed():
                        await held.enter_async_context(self._leases.hold(record_key, wait=wait))
                    record = await held.enter_async_context(self._records.hold(record_key, wait=wait))
                    outcome = await self._reconciler.reconcile(
                        desired, sequence, record, events, last=last if delivered is not None else None
                    )
            except Exception as exc:
                self._pod_events.restore(key, events)  # look at them again on the retry
                if delivered is not None:  # and the set (a busy lease need not cost a read)
                    self._keep_delivered(key, *delivered)
                FAILURES.labels(self.desired_durable, "transient").inc()
                span.set_status(trace.StatusCode.ERROR, str(exc)[:200])
                if self.events is not None:
                    record_failure(self.events, desired.owner, exc)
                raise
            finally:
                WRITES.reset(token)
                self._writing.pop(key, None)
                self._written[key] = writes
                self._reconciler.deleted_on_purpose(
                    w.deleted_uid for w in writes if w.resource == Resource.PODS and w.deleted_uid
                )
                self._decide_heard(key)
            self._pod_events.restore(key, outcome.waiting)
            if outcome.retry_after is not None:
                span.set_attribute("ferry.retry_after", outcome.retry_after)
                self.queue.add_after(key, outcome.retry_after)
            if outcome.result is None:
                MESSAGES.labels(self.desired_durable, "stale" if outcome.stale else "skipped").inc()
                return
            await self._publish(outcome.result, f"{DESIRED_STREAM}/{outcome.sequence}")
            ok = outcome.result.ok
            if not ok:
                FAILURES.labels(self.desired_durable, "permanent").inc()
                span.set_status(trace.StatusCode.ERROR, outcome.result.message[:200])
            span.set_attribute("ferry.ok", ok)
            MESSAGES.labels(self.desired_durable, "ok" if ok else "failed").inc()
            if self.events is not None:
                record_events(self.events, outcome.result)

    def _legacy_lease_needed(self) -> bool:
        """Whether a replica of the previous release may run (it knows only ``ferry_applier_leases``):
        until the live replicas are known, while one of them lacks this release's mark, and always
        with ``FERRY_APPLIER_LEGACY_LEASE`` (before a roll-back)."""
        members = self._members
        return self.settings.legacy_lease or members is None or not members.all_marked(RECORD_LEASE)

    def _own_write(self, owner: OwnerRef, event: ObjectEvent) -> bool:
        """Whether ``event`` only echoes a write of the owner's last or current reconcile here (the
        object as this replica wrote it): re-queueing the owner would change nothing.

        A tombstone is never an echo, not even of this replica's own delete: the deleting reconcile
        planned with the object still there, and what follows its disappearance (the group a
        recovery rebuilds, a rollout's next step) can only be planned once it is gone. A pod that
        was never bound vanishes at once, without a terminating update to re-queue its owner.
        """
        if event.deleted:
            return False
        key = (event.resource, event.namespace, event.name)
        revision = _revision(event.resource_version)
        return any(
            (written.resource, written.namespace, written.name) == key
            and 0 < written.resource_version == revision
            for written in (*self._writing.get(owner, ()), *self._written.get(owner, ()))
        )

    def _caught_up(self, key: OwnerRef) -> bool:
        """Whether the view shows every write of the owner's previous reconcile."""
        assert self.view is not None
        for written in self._written.get(key, ()):
            stamp = self.view.stamp(written.resource, written.namespace, written.name)
            if written.deleted_uid:
                if stamp is not None and stamp[0] == written.deleted_uid:
                    return False
            elif stamp is None or _revision(stamp[1]) < written.resource_version:
                return False
        return True

    async def _publish(self, result: ApplyResult, source: str) -> None:
        """Publish a result, deduplicated per input message.

        The id is ``result.msg_id`` plus the input's stream position: a redelivered input publishes
        once, while ok → failed → ok for the same generation is three messages (a content-only id
        would drop the last one as a duplicate and leave the stale failure as the subject's last).
        """
        assert self._js is not None
        if await self._same_as_last(result):
            return  # the subject already says this: a re-queue or resync that changed nothing
        headers: dict[str, str] = {MSG_ID_HEADER: f"{result.msg_id}/{source}"}
        propagate.inject(headers)
        await self._js.publish(result.subject, result.to_bytes(), stream=RESULTS_STREAM, headers=headers)

    async def _same_as_last(self, result: ApplyResult) -> bool:
        """The last result says the same, or this one changed nothing and the last was a success
        for the same owner generation (its children's actions are the story worth keeping)."""
        assert self._js is not None
        if result.ok and any(child.action in CHANGES for child in result.children):
            return False  # it tells of writes just made: no earlier result can say the same
        try:
            raw = await self._js.get_last_msg(RESULTS_STREAM, result.subject)
            last = ApplyResult.model_validate_json(raw.data or b"")
        except (NotFoundError, ValidationError):
            return False
        if _comparable(last) == _comparable(result):
            return True
        return (
            result.ok
            and last.ok
            and all(child.action == "unchanged" for child in result.children)
            and (last.owner.uid, last.owner.generation) == (result.owner.uid, result.owner.generation)
        )

    async def _last_desired(self, resource: str, namespace: str, name: str) -> tuple[DesiredSet, int] | None:
        """An owner's current desired set (the last message on its subject) and its stream sequence."""
        assert self._js is not None
        try:
            raw = await self._js.get_last_msg(DESIRED_STREAM, desired_subject(resource, namespace, name))
        except NotFoundError:
            return None
        try:
            return DesiredSet.model_validate_json(raw.data or b""), int(raw.seq or 0)
        except ValidationError:
            return None

    @contextlib.contextmanager
    def _span(self, name: str, context: Context | None, desired: DesiredSet) -> Any:
        owner = desired.owner
        with tracer.start_as_current_span(
            name,
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": desired.subject,
                "ferry.owner.kind": owner.kind,
                "ferry.owner.namespace": owner.namespace,
                "ferry.owner.name": owner.name,
                "ferry.owner.generation": owner.generation,
            },
        ) as span:
            yield span


def owner_priority(key: OwnerRef) -> int:
    """Which owner a free worker takes first (lower first): a ModelServing before a ModelBooster.

    A burst of new boosters queues their reconciles before any of their ModelServings exists; taken
    in arrival order, every booster's pods would wait until the last booster's children are written.
    Finishing the owners already half way down the chain first lets each booster reach its pods
    sooner, with the same total work.
    """
    return 0 if key[0] in PODS_OWNERS else 1


def durable_name(base: str, namespace: str) -> str:
    """``base`` for every namespace, ``base-<namespace>`` for a namespace-scoped applier."""
    return f"{base}-{namespace}" if namespace else base


async def delete_retired_durables(js: JetStreamContext, namespace: str) -> None:
    """Delete the durable consumers an earlier applier read (:data:`RETIRED_DURABLES`), if any."""
    await delete_durables(js, ((stream, durable_name(base, namespace)) for stream, base in RETIRED_DURABLES))


def subject_filter(namespace: str) -> str:
    """Desired-set subjects to consume: everything, or one namespace's."""
    if not namespace:
        return f"{DESIRED_PREFIX}.>"
    return f"{DESIRED_PREFIX}.*.{encode_token(namespace)}.*"


def _revision(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _comparable(result: ApplyResult) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude={"finished_at"}, exclude_none=True)


async def run(settings: ApplierSettings, stop: asyncio.Event) -> None:
    """Serve probes, consume until ``stop`` is set, then drain."""
    api = await load_api_client(settings.kubeconfig or None)
    kube = KubeClient(api, timeout=settings.kube_timeout)
    applier = Applier(settings, kube, EventRecorder(api, "ferry.serving.volcano.sh/applier"))
    probes = ProbeServer(settings.probe_host, settings.probe_port, ready=applier.ready)
    port = await probes.start()
    log.info("applier probes on %s:%s", settings.probe_host, port)
    try:
        await applier.start()
        await stop.wait()
    finally:
        await applier.stop()
        await probes.stop()
        await api.close()


async def amain() -> None:
    await serve(ApplierSettings(), run)
