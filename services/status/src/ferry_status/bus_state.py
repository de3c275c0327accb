"""The last desired set and apply result per owner, read from the snapshot streams.

A message is decoded once: an owner's status is reconciled many times against the same desired
set (a booster's is read on every change of its ModelServing), and decoding it was most of the
status service's CPU. Decoded messages are remembered by (stream, sequence), which names one
message for good.
"""

from __future__ import annotations

import json
from typing import TypeVar

from ferry_schemas.bus import (
    DESIRED_STREAM,
    RESULTS_STREAM,
    ApplyResult,
    DesiredSet,
    desired_subject,
    result_subject,
)
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
DECODED_LIMIT = 4096
_decoded: dict[tuple[str, int], BaseModel] = {}


def _decode(stream: str, sequence: int, data: bytes, model: type[M]) -> M:
    key = (stream, sequence)
    found = _decoded.get(key)
    if isinstance(found, model):
        return found
    decoded = model.model_validate(json.loads(data or b"{}"))
    if sequence:
        while len(_decoded) >= DECODED_LIMIT:
            del _decoded[next(iter(_decoded))]  # the oldest first
        _decoded[key] = decoded
    return decoded


async def last_desired(js: JetStreamContext, resource: str, namespace: str, name: str) -> DesiredSet | None:
    try:
        raw = await js.get_last_msg(DESIRED_STREAM, desired_subject(resource, namespace, name))
    except NotFoundError:
        return None
    return _decode(DESIRED_STREAM, int(raw.seq or 0), raw.data or b"", DesiredSet)


async def last_result(js: JetStreamContext, resource: str, namespace: str, name: str) -> ApplyResult | None:
    try:
        raw = await js.get_last_msg(RESULTS_STREAM, result_subject(resource, namespace, name))
    except NotFoundError:
        return None
    return _decode(RESULTS_STREAM, int(raw.seq or 0), raw.data or b"", ApplyResult)
