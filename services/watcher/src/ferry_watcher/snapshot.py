"""What FERRY_OBJECTS already holds for one resource: the last message id per subject.

A (re)started watcher uses it to skip re-publishing objects the stream already has at the same
resourceVersion, and to publish tombstones for objects that vanished while no watcher ran.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from ferry_schemas.bus import MSG_ID_HEADER, OBJECTS_STREAM, ObjectEvent, object_filter
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy


@dataclass(frozen=True)
class StoredEntry:
    """The last message on one subject: its id and whether it is a tombstone."""

    subject: str
    msg_id: str

    @property
    def tombstone(self) -> bool:
        return self.msg_id.endswith("/DELETED")


async def stored_entries(
    js: JetStreamContext, resource: str, namespace: str | None = None, wait: float = 10.0
) -> dict[str, StoredEntry]:
    """Subject → last entry for ``ferry.obj.<resource>.>`` (headers only, no bodies)."""
    subject_filter = object_filter(resource)
    if namespace:
        subject_filter = f"{subject_filter[:-2]}.{namespace.replace('.', '_')}.>"
    info = await js.stream_info(OBJECTS_STREAM, subjects_filter=subject_filter)
    expected = len(info.state.subjects or {})
    entries: dict[str, StoredEntry] = {}
    if expected == 0:
        return entries
    sub = await js.subscribe(
        subject_filter,
        stream=OBJECTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        headers_only=True,
    )
    try:
        async with asyncio.timeout(wait):
            while True:
                msg = await sub.next_msg(timeout=wait)
                entries[msg.subject] = StoredEntry(msg.subject, (msg.headers or {}).get(MSG_ID_HEADER, ""))
                if msg.metadata.num_pending == 0:
                    break
    finally:
        await sub.unsubscribe()
    return entries


async def stored_object(js: JetStreamContext, subject: str) -> ObjectEvent | None:
    """The full last event on ``subject`` (used to build a tombstone), None when unreadable."""
    try:
        raw = await js.get_last_msg(OBJECTS_STREAM, subject)
    except Exception:
        return None
    data: Any = json.loads(raw.data or b"{}")
    try:
        return ObjectEvent.model_validate(data)
    except ValueError:
        return None
