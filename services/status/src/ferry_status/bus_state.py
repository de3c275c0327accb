"""The last desired set and apply result per owner, followed from the snapshot streams.

Like the object view: one ordered consumer per stream and owner kind, from the last message per
subject (the snapshot) and then every change (:class:`~ferry_schemas.runtime.follow.StreamFollower`),
so a reconcile reads them from memory instead of a JetStream get per owner and reconcile. Only what
a status reads is kept (:func:`slim_desired`): a desired set without its children's bodies and
workload (a booster's is tens of KB parsed); an apply result is small and kept whole (its children's
kinds and names tell which children a first status waits to see).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from ferry_schemas.bus import (
    DESIRED_PREFIX,
    DESIRED_STREAM,
    RESULTS_PREFIX,
    RESULTS_STREAM,
    ApplyResult,
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


def slim_desired(data: dict[str, Any]) -> DesiredSet:
    """A desired set as status reads it: owner, tombstone, errors and its ModelServings' names."""
    servings = [
        {"kind": "ModelServing", "metadata": {"name": (child.get("metadata") or {}).get("name")}}
        for child in data.get("children") or ()
        if isinstance(child, dict) and child.get("kind") == "ModelServing"
    ]
    kept = {key: data[key] for key in ("owner", "deleted", "errors", "producedAt") if key in data}
    return DesiredSet.model_validate({**kept, "children": servings})


def slim_result(data: dict[str, Any]) -> ApplyResult:
    """An apply result as status reads it (all of it: owner, ok, reason, message, the children's
    kinds, names and actions)."""
    return ApplyResult.model_validate(data)


class PipelineView:
    """:meth:`desired` and :meth:`result` of an owner; :meth:`wait_for` a message of either stream."""

    def __init__(self, js: JetStreamContext) -> None:
        self._desired: dict[Owner, DesiredSet] = {}
        self._results: dict[Owner, ApplyResult] = {}
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

    @property
    def synced(self) -> bool:
        return all(feed.synced for feed in self._feeds.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(feed.wait_synced() for feed in self._feeds.values()))

    def desired(self, resource: str, namespace: str, name: str) -> DesiredSet | None:
        return self._desired.get((str(resource), namespace, name))

    def result(self, resource: str, namespace: str, name: str) -> ApplyResult | None:
        return self._results.get((str(resource), namespace, name))

    async def wait_for(self, stream: str, subject: str, sequence: int, limit: float = 5.0) -> bool:
        """Wait until message ``sequence`` of ``stream`` on ``subject`` (or a later one) was applied."""
        feed = self._feeds.get(stream)
        if feed is None:
            return True
        return await feed.wait_for(subject.split(".")[2], sequence, limit)

    def when_holds(self, stream: str, subject: str, sequence: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once message ``sequence`` of ``stream`` on ``subject`` (or a later one)
        was applied (at once for a stream this view does not follow)."""
        feed = self._feeds.get(stream)
        if feed is None:
            callback()
        else:
            feed.when_holds(subject.split(".")[2], sequence, callback)

    async def start(self) -> None:
        for feed in self._feeds.values():
            await feed.start()

    async def stop(self) -> None:
        for feed in self._feeds.values():
            await feed.stop()

    def _on_desired(self, _: str, msg: Msg) -> None:
        self._keep(msg, self._desired, slim_desired)

    def _on_result(self, _: str, msg: Msg) -> None:
        self._keep(msg, self._results, slim_result)

    def _keep(self, msg: Msg, into: dict[Owner, Any], slim: Any) -> None:
        try:
            parts = parse_subject(msg.subject)
        except ValueError:
            return
        owner = (parts.resource, parts.namespace, parts.name)
        try:
            data = json.loads(msg.data or b"{}")
            into[owner] = slim(data if isinstance(data, dict) else {})
        except (ValueError, ValidationError) as exc:  # what it said before is no longer current
            into.pop(owner, None)
            log.error("undecodable message on %s: %s", msg.subject, exc)
