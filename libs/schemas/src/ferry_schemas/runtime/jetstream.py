"""JetStream plumbing shared by the services: connect, declare streams and buckets, dead letters.

Streams are declared by one owner (the watcher, and test fixtures); everyone else binds.
A message that fails ``max_deliver`` times stays in its stream and the server raises the
MAX_DELIVERIES advisory; :class:`DeadLetterForwarder` turns each advisory into a
:class:`~ferry_schemas.bus.DeadLetter` on ``ferry.dlq.…`` and counts it, so nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from prometheus_client import Counter, Gauge

from ferry_schemas.bus import (
    DEAD_LETTER_STREAM,
    MSG_ID_HEADER,
    STREAMS,
    DeadLetter,
    StreamSpec,
    dead_letter_subject,
)
from ferry_schemas.runtime.nats_connect import Listener as Listener
from ferry_schemas.runtime.nats_connect import connect as connect
from ferry_schemas.runtime.nats_connect import nats_options as nats_options
from ferry_schemas.runtime.nats_connect import on_reconnect as on_reconnect
from ferry_schemas.runtime.settings import env_int
from ferry_schemas.runtime.workqueue import Backoff

log = logging.getLogger(__name__)
T = TypeVar("T")

UNANSWERED = (nats.errors.TimeoutError, nats.errors.NoRespondersError, ServiceUnavailableError)
"""What a JetStream request ends with while a nats-server restarts or the client reconnects: no
answer in time, or JetStream not up yet (503). Another try later gets an answer."""
UNANSWERED_BACKOFF = Backoff(base=0.25, cap=5.0)


async def until_answered(request: Callable[[], Awaitable[T]], what: str) -> T:
    """``await request()`` again until JetStream answers (any other error is raised).

    For start-up's one-shot requests (declare the streams, bind a bucket): a nats-server that
    restarts meanwhile is a wait, not a reason for the process to exit.
    """
    failures = 0
    while True:
        try:
            return await request()
        except UNANSWERED as exc:
            failures += 1
            delay = UNANSWERED_BACKOFF.delay(failures)
            log.warning("%s: JetStream did not answer (%r); trying again in %.2fs", what, exc, delay)
            await asyncio.sleep(delay)


DEAD_LETTERS = Counter(
    "ferry_dead_letters_total",
    "Messages that exhausted max_deliver and were moved to the dead-letter stream.",
    ["service", "stream", "consumer"],
)
SUPERSEDED = Counter(
    "ferry_superseded_undelivered_total",
    "Messages that exhausted max_deliver after a newer revision of their subject replaced them "
    "(not dead letters: the newer revision is delivered on its own).",
    ["service", "stream", "consumer"],
)


PENDING = Gauge(
    "ferry_consumer_pending_messages",
    "Messages on the stream not yet delivered to this durable consumer, as of the last one fetched (lag).",
    ["consumer"],
)


def record_pending(pending: Gauge, msg: Msg) -> None:
    """Report a consumer's lag (``pending``: its :data:`PENDING` child) from a fetched message's
    ack subject (no API call)."""
    count = num_pending(msg.reply)
    if count is not None:  # a message without JetStream metadata has no lag to report
        pending.set(count)


def num_pending(reply: str | None) -> int | None:
    """The pending count a JetStream ack subject ends with (:func:`ack_position`)."""
    position = ack_position(reply)
    return None if position is None else position[1]


def ack_position(reply: str | None) -> tuple[int, int] | None:
    """The stream sequence and the pending count a JetStream ack subject names: ``$JS.ACK.<stream>.
    <consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``, or the form with a domain
    and an account hash after ``ACK`` and a token at the end; None for a message without them. What
    ``msg.metadata`` says of both, without parsing the rest (a timestamp into a datetime: 2.4 µs a
    message, a fifth of a consumer's own work per message)."""
    tokens = (reply or "").split(".")
    if len(tokens) < 9 or tokens[0] != "$JS" or tokens[1] != "ACK":
        return None
    try:
        if len(tokens) == 9:
            return int(tokens[5]), int(tokens[8])
        return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumPending])
    except (ValueError, IndexError):
        return None


REPLICAS_ENV = "FERRY_STREAM_REPLICAS"


def replicas() -> int:
    """How many copies JetStream keeps of every Ferry stream and KV bucket: ``FERRY_STREAM_REPLICAS``
    (1 on a one-node stack, the default; 3 in ``deploy/``, on the 3-node cluster)."""
    return env_int(REPLICAS_ENV, 1)


def stream_config(spec: StreamSpec) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=spec.subjects,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        duplicate_window=spec.duplicate_window,
        max_age=spec.max_age,
        max_bytes=spec.max_bytes,
        storage=StorageType.MEMORY if spec.memory else StorageType.FILE,
        discard=DiscardPolicy.OLD,
        num_replicas=replicas(),
    )


async def declare_streams(js: JetStreamContext, specs: tuple[StreamSpec, ...] = STREAMS) -> None:
    """Create or update every Ferry stream (idempotent; waits out a nats-server restart)."""
    for spec in specs:
        config = stream_config(spec)

        async def declare(config: StreamConfig = config) -> None:
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.update_stream(config)

        await until_answered(declare, f"declare stream {spec.name}")


async def key_value(
    js: JetStreamContext, bucket: str, *, history: int = 1, ttl: float | None = None
) -> KeyValue:
    """Bind to a KV bucket, creating it when it does not exist yet (``ttl``: entries expire; waits
    out a nats-server restart)."""

    async def bind() -> KeyValue:
        try:
            return await js.key_value(bucket)
        except (NotFoundError, BadRequestError):
            config = KeyValueConfig(bucket=bucket, history=history, ttl=ttl, replicas=replicas())
            return await js.create_key_value(config)

    return await until_answered(bind, f"bind bucket {bucket}")


class DeadLetterForwarder:
    """Moves messages that exhausted ``max_deliver`` on ``stream``/``consumer`` to the DLQ."""

    def __init__(self, nc: Client, js: JetStreamContext, service: str, stream: str, consumer: str) -> None:
        self._nc = nc
        self._js = js
        self.service = service
        self.stream = stream
        self.consumer = consumer
        self._sub: Subscription | None = None

    @property
    def advisory_subject(self) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream}.{self.consumer}"

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self.advisory_subject, cb=self._on_advisory)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_advisory(self, msg: Msg) -> None:
        try:
            advisory = json.loads(msg.data)
            seq = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", 0))
            subject, data = "", ""
            try:
                raw = await self._js.get_msg(self.stream, seq)
                subject = raw.subject or ""
                data = (raw.data or b"").decode("utf-8", "replace")
            except NotFoundError:
                # Ferry's streams keep the last message per subject: one that is gone was replaced by
                # a newer revision of its object, which is delivered (and retried) on its own. Nothing
                # is lost and nothing could be re-driven (a re-drive re-publishes a subject's current
                # message, and this one has no subject any more).
                log.warning(
                    "%s/%s seq %s exhausted %s deliveries, but a newer revision replaced it: no dead letter",
                    self.stream, self.consumer, seq, deliveries,
                )  # fmt: skip
                SUPERSEDED.labels(self.service, self.stream, self.consumer).inc()
                return
            except Exception as exc:
                log.warning(
                    "dead letter %s/%s seq %s could not be read: %s", self.stream, self.consumer, seq, exc
                )
            letter = DeadLetter(
                service=self.service,
                stream=self.stream,
                consumer=self.consumer,
                subject=subject,
                stream_sequence=seq,
                deliveries=deliveries,
                data=data,
            )
            ack = await self._js.publish(
                dead_letter_subject(self.service, self.stream, self.consumer),
                letter.to_bytes(),
                stream=DEAD_LETTER_STREAM,
                headers={MSG_ID_HEADER: f"{self.stream}/{self.consumer}/{seq}/{deliveries}"},
            )
            if ack.duplicate:  # every replica sees the advisory; the one whose publish landed counts it
                return
            DEAD_LETTERS.labels(self.service, self.stream, self.consumer).inc()
            log.error(
                "dead letter: %s seq %s on %s failed %s deliveries", self.consumer, seq, subject, deliveries
            )
        except Exception:
            log.exception("could not forward a dead letter advisory")


async def wait_for_streams(js: JetStreamContext, streams: tuple[str, ...], stop: asyncio.Event) -> bool:
    """Wait until the watcher declared ``streams`` (and JetStream answers); False when ``stop`` was
    set first."""
    while not stop.is_set():
        try:
            for stream in streams:
                await js.stream_info(stream)
            return True
        except NotFoundError:
            log.info("waiting for the streams %s to be declared", ", ".join(streams))
        except UNANSWERED as exc:
            log.warning("waiting for JetStream to answer about the streams %s: %r", ", ".join(streams), exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return False


async def delete_durables(js: JetStreamContext, durables: Iterable[tuple[str, str]]) -> None:
    """Delete each (stream, durable consumer) of ``durables`` that exists.

    For consumers an earlier release read and this one no longer does: the server stops keeping their
    state and pending counts. Housekeeping only: a consumer or stream already gone is skipped, and any
    other failure is logged and start-up goes on (a later start tries again).
    """
    for stream, durable in durables:
        try:
            await js.delete_consumer(stream, durable)
        except NotFoundError:
            continue
        except Exception as exc:
            log.warning("could not delete the retired durable consumer %s on %s: %s", durable, stream, exc)
            continue
        log.info("deleted the retired durable consumer %s on %s", durable, stream)


async def last_subjects(js: JetStreamContext, stream: str, filter_subject: str) -> list[str]:
    """Every subject under ``filter_subject`` whose last message is still in ``stream``.

    Read with an ephemeral ordered consumer delivering the last message per subject (the snapshot),
    headers only; used by resyncs to re-drive every owner.
    """
    subjects: list[str] = []
    done = asyncio.Event()

    async def on_message(msg: Msg) -> None:
        subjects.append(msg.subject)
        if msg.metadata.num_pending == 0:
            done.set()

    sub = await js.subscribe(
        filter_subject,
        stream=stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=True,
    )
    try:
        info = await sub.consumer_info()
        if info.num_pending or (info.delivered is not None and info.delivered.consumer_seq):
            await asyncio.wait_for(done.wait(), timeout=60.0)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return subjects
