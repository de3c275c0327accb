"""The applier service: durable pull consumers on desired sets and pod events, one reconcile each.

Replicas share the durable consumers (``applier-desired`` on ``ferry.desired.>``,
``applier-pods`` on ``ferry.obj.pods.>``, ``applier-podgroups`` on ``ferry.obj.podgroups.>``).
Messages are acked after the work is done, nacked with exponential
back-off on a transient error (the equivalent of FastStream's ``NACK_ON_ERROR``), and land on the
dead-letter stream after ``max_deliver`` attempts. Within a process, reconciles of one owner are
serialised (kopf's per-object queues); different owners run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats.errors
from ferry_schemas.bus import (
    APPLIED_GENERATIONS_BUCKET,
    DEAD_LETTER_STREAM,
    DESIRED_PREFIX,
    DESIRED_STREAM,
    MSG_ID_HEADER,
    OBJECTS_PREFIX,
    OBJECTS_STREAM,
    RESULTS_STREAM,
    ApplyResult,
    DeadLetter,
    DesiredSet,
    ObjectEvent,
    OwnerKey,
    Resource,
    dead_letter_subject,
    desired_subject,
    encode_token,
    kv_key,
    object_filter,
)
from ferry_schemas.runtime import ProbeServer
from ferry_schemas.runtime.jetstream import (
    DEAD_LETTERS,
    DeadLetterForwarder,
    connect,
    key_value,
    record_pending,
)
from ferry_schemas.runtime.lifecycle import serve
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from opentelemetry import propagate, trace
from pydantic import ValidationError

from ferry_applier.errors import backoff_delay, is_transient
from ferry_applier.generations import GenerationGuard
from ferry_applier.kube import KubeClient, load_api_client
from ferry_applier.lease import LEASES_BUCKET, OwnerLeases
from ferry_applier.metrics import FAILURES, MESSAGES, RECONCILE_SECONDS
from ferry_applier.reconciler import Outcome, Reconciler, owner_uid_of, serving_of
from ferry_applier.settings import ApplierSettings
from ferry_applier.workload.engine import WorkloadEngine
from ferry_applier.workload.render import read_spec, render_group

log = logging.getLogger(__name__)
tracer = trace.get_tracer("ferry_applier")

OwnerLockKey = tuple[str, str, str]


class OwnerLocks:
    """One asyncio.Lock per owner, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[OwnerLockKey, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: OwnerLockKey) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Applier:
    """Binds the consumers and runs the reconcile loops until stopped."""

    def __init__(self, settings: ApplierSettings, kube: KubeClient) -> None:
        self.settings = settings
        self.kube = kube
        self.engine = WorkloadEngine(kube, render_group, read_spec)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._reconciler: Reconciler | None = None
        self._forwarders: list[DeadLetterForwarder] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._slots = asyncio.Semaphore(max(1, settings.concurrency))
        self._locks = OwnerLocks()
        self._leases: OwnerLeases | None = None
        self._stopping = asyncio.Event()
        self._bound = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def desired_durable(self) -> str:
        """The durable name; it carries the namespace filter (a durable's filter cannot change on 2.9)."""
        return durable_name(self.settings.desired_consumer, self.settings.namespace)

    @property
    def pods_durable(self) -> str:
        return durable_name(self.settings.pods_consumer, self.settings.namespace)

    @property
    def podgroups_durable(self) -> str:
        return durable_name(self.settings.podgroups_consumer, self.settings.namespace)

    @property
    def durables(self) -> list[tuple[str, str]]:
        """(stream, durable consumer) of every consumer this applier reads."""
        return [
            (DESIRED_STREAM, self.desired_durable),
            (OBJECTS_STREAM, self.pods_durable),
            (OBJECTS_STREAM, self.podgroups_durable),
        ]

    def ready(self) -> bool:
        return self._bound and self._nc is not None and self._nc.is_connected

    async def start(self) -> None:
        s = self.settings
        self._nc = await connect(s.nats_url, f"ferry-{s.service}")
        self._js = self._nc.jetstream()
        await self._wait_for_streams()
        kv = await key_value(self._js, APPLIED_GENERATIONS_BUCKET)
        holder = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:6]}"
        self._leases = OwnerLeases(await key_value(self._js, LEASES_BUCKET), holder, ttl=s.ack_wait)
        self._reconciler = Reconciler(self.kube, GenerationGuard(kv), self.engine)
        desired_filter, pods_filter, podgroups_filter = subject_filters(s.namespace)
        desired = await self._bind(DESIRED_STREAM, self.desired_durable, desired_filter)
        pods = await self._bind(OBJECTS_STREAM, self.pods_durable, pods_filter)
        podgroups = await self._bind(OBJECTS_STREAM, self.podgroups_durable, podgroups_filter)
        self._bound = True
        self._loops = [
            asyncio.create_task(self._consume(desired, self._on_desired, self.desired_durable)),
            asyncio.create_task(self._consume(pods, self._on_child, self.pods_durable)),
            asyncio.create_task(self._consume(podgroups, self._on_child, self.podgroups_durable)),
        ]
        log.info("applier consuming %s and %s", DESIRED_STREAM, OBJECTS_STREAM)

    async def stop(self) -> None:
        self._stopping.set()
        for loop in self._loops:
            loop.cancel()
        for loop in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loop
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)
        for forwarder in self._forwarders:
            await forwarder.stop()
        if self._nc is not None:
            # every handler has finished (acked or nacked) by now; drain would wait out its
            # 30 s timeout on the idle pull subscriptions
            with contextlib.suppress(Exception):
                await self._nc.close()
        self._bound = False

    async def _wait_for_streams(self) -> None:
        """The watcher declares the streams; wait for them instead of declaring them here."""
        assert self._js is not None
        while not self._stopping.is_set():
            try:
                for stream in (DESIRED_STREAM, OBJECTS_STREAM, RESULTS_STREAM):
                    await self._js.stream_info(stream)
                return
            except NotFoundError:
                log.info("waiting for the Ferry streams to be declared")
                await asyncio.sleep(1.0)

    async def _bind(self, stream: str, durable: str, subject: str) -> JetStreamContext.PullSubscription:
        assert self._js is not None
        assert self._nc is not None
        s = self.settings
        config = ConsumerConfig(
            durable_name=durable,
            filter_subject=subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            max_deliver=s.max_deliver,
            ack_wait=s.ack_wait,
            max_ack_pending=max(1, s.concurrency * 4),
        )
        await self._js.add_consumer(stream, config)  # creates it, or updates the mutable fields
        forwarder = DeadLetterForwarder(self._nc, self._js, s.service, stream, durable)
        await forwarder.start()
        self._forwarders.append(forwarder)
        return await self._js.pull_subscribe_bind(durable=durable, stream=stream)

    # ------------------------------------------------------------------ loops

    async def _consume(
        self, sub: JetStreamContext.PullSubscription, handler: Callable[[Msg], Awaitable[None]], consumer: str
    ) -> None:
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self.settings.batch, timeout=1.0)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection trouble: nats-py reconnects, we wait and fetch again
                log.warning("fetch on %s failed: %s", consumer, exc)
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._slots.acquire()
                task = asyncio.create_task(self._handle(handler, msg, consumer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _handle(self, handler: Callable[[Msg], Awaitable[None]], msg: Msg, consumer: str) -> None:
        started = time.perf_counter()
        record_pending(consumer, msg)
        try:
            await handler(msg)
        except Exception as exc:
            deliveries = _deliveries(msg)
            delay = backoff_delay(deliveries, base=self.settings.backoff, cap=self.settings.backoff_max)
            if is_transient(exc):
                FAILURES.labels(consumer, "transient").inc()
                MESSAGES.labels(consumer, "retried").inc()
                log.warning(
                    "transient failure on %s (delivery %s), retry in %.1fs: %s",
                    msg.subject,
                    deliveries,
                    delay,
                    exc,
                )
            else:
                FAILURES.labels(consumer, "error").inc()
                MESSAGES.labels(consumer, "failed").inc()
                log.exception(
                    "reconcile of %s failed (delivery %s), retry in %.1fs", msg.subject, deliveries, delay
                )
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
        finally:
            RECONCILE_SECONDS.labels(consumer).observe(time.perf_counter() - started)
            self._slots.release()

    # ------------------------------------------------------------------ handlers

    async def _on_desired(self, msg: Msg) -> None:
        consumer = self.desired_durable
        try:
            desired = DesiredSet.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._reject(msg, DESIRED_STREAM, consumer, f"not a DesiredSet: {exc}")
            return
        owner = desired.owner
        with self._span("applier reconcile", msg, desired) as span:
            async with self._serialised(owner, msg):
                assert self._reconciler is not None
                outcome = await self._reconciler.reconcile(desired)
            await self._finish(msg, consumer, outcome, span)

    async def _on_child(self, msg: Msg) -> None:
        """A pod or PodGroup of a ModelServing changed: recover and reconcile that ModelServing."""
        consumer = self.pods_durable if ".pods." in msg.subject else self.podgroups_durable
        try:
            event = ObjectEvent.model_validate_json(msg.data)
        except ValidationError as exc:
            await self._reject(msg, OBJECTS_STREAM, consumer, f"not an ObjectEvent: {exc}")
            return
        target = serving_of(event)
        desired = await self._last_desired(*target) if target else None
        owner_uid = owner_uid_of(event)
        if desired is None or (owner_uid and owner_uid != desired.owner.uid):
            MESSAGES.labels(consumer, "skipped").inc()
            await msg.ack()
            return
        owner = desired.owner
        with self._span(f"applier {event.resource} event", msg, desired) as span:
            span.set_attribute("k8s.name", event.name)
            span.set_attribute("k8s.event", event.type)
            async with self._serialised(owner, msg):
                assert self._reconciler is not None
                outcome = await self._reconciler.child_event(event, desired)
            await self._finish(msg, consumer, outcome, span)

    @contextlib.asynccontextmanager
    async def _serialised(self, owner: OwnerKey, msg: Msg) -> AsyncIterator[None]:
        """One reconcile per owner: in this process (a lock), across replicas (a KV lease that is
        renewed while the reconcile runs, with ``msg`` kept in progress so it is not redelivered)."""
        assert self._leases is not None
        async with self._locks.hold((owner.resource, owner.namespace, owner.name)):
            key = kv_key(owner.resource, owner.namespace, owner.name)
            async with self._leases.hold(key, wait=self.settings.ack_wait / 2, keepalive=msg.in_progress):
                yield

    async def _finish(self, msg: Msg, consumer: str, outcome: Outcome, span: trace.Span) -> None:
        if outcome.retry_after is not None:
            MESSAGES.labels(consumer, "waiting").inc()
            span.set_attribute("ferry.retry_after", outcome.retry_after)
            await msg.nak(delay=outcome.retry_after)
            return
        if outcome.result is not None:
            await self._publish(outcome.result, f"{msg.metadata.stream}/{msg.metadata.sequence.stream}")
            ok = outcome.result.ok
            if not ok:
                FAILURES.labels(consumer, "permanent").inc()
                span.set_status(trace.StatusCode.ERROR, outcome.result.message[:200])
            span.set_attribute("ferry.ok", ok)
            MESSAGES.labels(consumer, "ok" if ok else "failed").inc()
        else:
            MESSAGES.labels(consumer, "stale" if outcome.stale else "skipped").inc()
        await msg.ack()

    async def _publish(self, result: ApplyResult, source: str) -> None:
        """Publish a result, deduplicated per input message.

        The id is ``result.msg_id`` plus the input's stream position: a redelivered input publishes
        once, while ok → failed → ok for the same generation is three messages (a content-only id
        would drop the last one as a duplicate and leave the stale failure as the subject's last).
        """
        assert self._js is not None
        if await self._same_as_last(result):
            return  # the subject already says exactly this: a pod event that changed nothing
        headers: dict[str, str] = {MSG_ID_HEADER: f"{result.msg_id}/{source}"}
        propagate.inject(headers)
        await self._js.publish(result.subject, result.to_bytes(), stream=RESULTS_STREAM, headers=headers)

    async def _same_as_last(self, result: ApplyResult) -> bool:
        assert self._js is not None
        try:
            raw = await self._js.get_last_msg(RESULTS_STREAM, result.subject)
            last = ApplyResult.model_validate_json(raw.data or b"")
        except (NotFoundError, ValidationError):
            return False
        return _comparable(last) == _comparable(result)

    async def _last_desired(self, namespace: str, name: str) -> DesiredSet | None:
        """The current desired set of a ModelServing: the last message on its FERRY_DESIRED subject."""
        assert self._js is not None
        try:
            raw = await self._js.get_last_msg(
                DESIRED_STREAM, desired_subject(Resource.MODEL_SERVINGS, namespace, name)
            )
        except NotFoundError:
            return None
        try:
            return DesiredSet.model_validate_json(raw.data or b"")
        except ValidationError:
            return None

    async def _reject(self, msg: Msg, stream: str, consumer: str, error: str) -> None:
        """Bad input: a clear error, a dead letter with the message, and no retry."""
        assert self._js is not None
        log.error("%s on %s: %s", consumer, msg.subject, error)
        MESSAGES.labels(consumer, "invalid").inc()
        meta = msg.metadata
        letter = DeadLetter(
            service=self.settings.service,
            stream=stream,
            consumer=consumer,
            subject=msg.subject,
            stream_sequence=meta.sequence.stream,
            deliveries=meta.num_delivered,
            error=error[:2000],
            data=(msg.data or b"").decode("utf-8", "replace"),
        )
        await self._js.publish(
            dead_letter_subject(self.settings.service, stream, consumer),
            letter.to_bytes(),
            stream=DEAD_LETTER_STREAM,
            headers={MSG_ID_HEADER: f"{stream}/{consumer}/{meta.sequence.stream}/invalid"},
        )
        DEAD_LETTERS.labels(self.settings.service, stream, consumer).inc()
        await msg.term()

    @contextlib.contextmanager
    def _span(self, name: str, msg: Msg, desired: DesiredSet) -> Any:
        context = propagate.extract(dict(msg.headers or {}))
        owner = desired.owner
        with tracer.start_as_current_span(
            name,
            context=context,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "ferry.owner.kind": owner.kind,
                "ferry.owner.namespace": owner.namespace,
                "ferry.owner.name": owner.name,
                "ferry.owner.generation": owner.generation,
            },
        ) as span:
            yield span


def durable_name(base: str, namespace: str) -> str:
    """``base`` for every namespace, ``base-<namespace>`` for a namespace-scoped applier."""
    return f"{base}-{namespace}" if namespace else base


def subject_filters(namespace: str) -> tuple[str, str, str]:
    """Desired-set, pod and PodGroup subjects to consume: everything, or one namespace's."""
    if not namespace:
        return f"{DESIRED_PREFIX}.>", object_filter(Resource.PODS), object_filter(Resource.POD_GROUPS)
    token = encode_token(namespace)
    return (
        f"{DESIRED_PREFIX}.*.{token}.*",
        f"{OBJECTS_PREFIX}.{Resource.PODS}.{token}.*",
        f"{OBJECTS_PREFIX}.{Resource.POD_GROUPS}.{token}.*",
    )


def _comparable(result: ApplyResult) -> dict[str, Any]:
    return result.model_dump(mode="json", exclude={"finished_at"}, exclude_none=True)


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:
        return 1


async def run(settings: ApplierSettings, stop: asyncio.Event) -> None:
    """Serve probes, consume until ``stop`` is set, then drain."""
    api = await load_api_client(settings.kubeconfig or None)
    kube = KubeClient(api, timeout=settings.kube_timeout)
    applier = Applier(settings, kube)
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
