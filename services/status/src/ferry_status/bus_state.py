"""The last desired set and apply result per owner, read from the snapshot streams."""

from __future__ import annotations

import json

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


async def last_desired(js: JetStreamContext, resource: str, namespace: str, name: str) -> DesiredSet | None:
    try:
        raw = await js.get_last_msg(DESIRED_STREAM, desired_subject(resource, namespace, name))
    except NotFoundError:
        return None
    return DesiredSet.model_validate(json.loads(raw.data or b"{}"))


async def last_result(js: JetStreamContext, resource: str, namespace: str, name: str) -> ApplyResult | None:
    try:
        raw = await js.get_last_msg(RESULTS_STREAM, result_subject(resource, namespace, name))
    except NotFoundError:
        return None
    return ApplyResult.model_validate(json.loads(raw.data or b"{}"))
