"""The last desired set and apply result per owner, followed from the snapshot streams.

Like the object view: one ordered consumer per stream and owner kind, from the last message per
subject (the snapshot) and then every change (:class:`~ferry_schemas.runtime.follow.StreamFollower`),
so a reconcile reads them from memory instead of a JetStream get per owner and reconcile. Only what
a status reads is kept, as one slotted record per owner (:class:`DesiredRecord`,
:class:`ResultRecord`): kept as pydantic models they cost about 12 KB per booster (a model, its
``__dict__``, its fields-set, an owner model, a model per child; 25 MB at 2000 boosters, by
``tracemalloc``), as records a few hundred bytes. :meth:`PipelineView.on_change` registers
``callback(stream, owner, headers)`` for every message kept (how the status service queues the
owner's reconcile, in the trace the message's headers carry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from ferry_schemas.bus import (
    DESIRED_PREFIX,
    DESIRED_STREAM,
    RESULTS_PREFIX,
    RESULTS_STREAM,
    ApplyResult,
    ConversionError,
    DesiredSet,
    Resource,
    parse_subject,
)
from ferry_schemas.runtime.follow import StreamFollower
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from pydantic import ValidationError

log = logging.getLogger(__name__)

OWNERS = (Resource.MODEL_SERVINGS, Resource.MODEL_BOOSTERS)
"""The owner kinds whose status this service writes from a desired set and an apply result."""
Owner = tuple[str, str, str]
"""(resource, namespace, name)."""
OwnerCallback = Callable[[str, Owner, Mapping[str, str] | None], None]
"""``callback(stream, owner, headers)``: ``FERRY_DESIRED`` or ``FERRY_RESULTS`` said something new of
``owner`` in a message with ``headers``."""
SHOWN_ACTIONS = ("created", "applied")
"""The actions of an apply result's children a first status waits to see in the view."""


@dataclass(frozen=True, slots=True)
class DesiredRecord:
    """What status reads of a desired set: its owner's uid and generation, the conversion errors, the
    names of its ModelServings and when it was produced (Unix time)."""

    uid: str
    generation: int
    errors: tuple[ConversionError, ...]
    servings: tuple[str, ...]
    produced_at: float

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> DesiredRecord:
        """From a desired set as published (its JSON, parsed); the children's bodies are dropped."""
        model = DesiredSet.model_validate({**data, "children": [], "workload": None})
        servings = (
            (child.get("metadata") or {}).get("name")
            for child in data.get("children") or ()
            if isinstance(child, dict) and child.get("kind") == "ModelServing"
        )
        return cls(
            _text(model.owner.uid),
            model.owner.generation,
            tuple(model.errors),
            tuple(_text(name) for name in servings if isinstance(name, str)),
            model.produced_at.timestamp(),
        )

    @classmethod
    def of(cls, desired: DesiredSet) -> DesiredRecord:
        return cls.from_wire(json.loads(desired.to_bytes()))


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """What status reads of an apply result: its owner's uid and generation, whether it succeeded and
    why not, when it finished (Unix time), and the (kind, name) of the children it created or applied
    (a first status waits until the view shows them)."""

    uid: str
    generation: int
    ok: bool
    reason: str
    message: str
    finished_at: float
    shown: tuple[tuple[str, str], ...]

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ResultRecord:
        return cls.of(ApplyResult.model_validate(data))

    @classmethod
    def of(cls, result: ApplyResult) -> ResultRecord:
        return cls(
            _text(result.owner.uid),
            result.owner.generation,
            result.ok,
            _text(result.reason),
            result.message,
            result.finished_at.timestamp(),
            tuple((_text(c.kind), _text(c.name)) for c in result.children if c.action in SHOWN_ACTIONS),
        )


def _text(value: str) -> str:
    """One string object for equal names, kinds and reasons across records (and the object view)."""
    return sys.intern(value)


class PipelineView:
    """:meth:`desired` and :meth:`result` of an owner; :meth:`on_change` a message of either stream."""

    def __init__(self, js: JetStreamContext) -> None:
        self._desired: dict[Owner, DesiredRecord] = {}
        self._results: dict[Owner, ResultRecord] = {}
        self._feeds = {
            DESIRED_STREAM: StreamFollower(
                js, DESIRED_STREAM, {str(r): f"{DESIRED_PREFIX}.{r}.>" for r in OWNERS},
                self._on_desired, name="status-desired-view",
            ),
            RESULTS_STREAM: StreamFollower(
                js, RESULTS_STREAM, {str(r): f"{RESULTS_PREFIX}.{r}.>" for r in OWNERS},
                self._on_result, name="status-results-view",
            ),
        }  # fmt: skip
        self._callbacks: list[OwnerCallback] = []

    @property
    def synced(self) -> bool:
        return all(feed.synced for feed in self._feeds.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(feed.wait_synced() for feed in self._feeds.values()))

    def desired(self, resource: str, namespace: str, name: str) -> DesiredRecord | None:
        return self._desired.get((str(resource), namespace, name))

    def result(self, resource: str, namespace: str, name: str) -> ResultRecord | None:
        return self._results.get((str(resource), namespace, name))

    def on_change(self, callback: OwnerCallback) -> None:
        """Call ``callback(stream, owner, headers)`` after each message kept (snapshot included)."""
        self._callbacks.append(callback)

    async def start(self) -> None:
        for feed in self._feeds.values():
            await feed.start()

    async def stop(self) -> None:
        for feed in self._feeds.values():
            await feed.stop()

    def _on_desired(self, _: str, msg: Msg) -> None:
        self._keep(DESIRED_STREAM, msg, self._desired, DesiredRecord.from_wire)

    def _on_result(self, _: str, msg: Msg) -> None:
        self._keep(RESULTS_STREAM, msg, self._results, ResultRecord.from_wire)

    def _keep(self, stream: str, msg: Msg, into: dict[Owner, Any], slim: Any) -> None:
        try:
            parts = parse_subject(msg.subject)
        except ValueError:
            return
        owner = (_text(parts.resource), _text(parts.namespace), _text(parts.name))
        try:
            data = msgspec.json.decode(msg.data or b"{}")  # a 7.7 KB desired set: 13 µs, json.loads 32
            into[owner] = slim(data if isinstance(data, dict) else {})
        except (ValueError, ValidationError) as exc:  # what it said before is no longer current
            into.pop(owner, None)
            log.error("undecodable message on %s: %s", msg.subject, exc)
        for callback in self._callbacks:
            try:
                callback(stream, owner, msg.headers)
            except Exception:
                log.exception("pipeline change callback failed for %s", msg.subject)
