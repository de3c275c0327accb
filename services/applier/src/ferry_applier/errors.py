"""Which failures are worth retrying (transient) and which must be reported (permanent)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from ferry_schemas.runtime.kubeconn import ApiError

from ferry_applier.kinds import UnknownKindError

PERMANENT_STATUSES = frozenset({400, 404, 405, 406, 413, 415, 422})
"""API answers that the same request will get again: bad or invalid objects, missing kinds."""


class TransientError(Exception):
    """Worth retrying later (with back-off) even though no API call failed."""


class PermanentApplyError(Exception):
    """The API server refused a child for a reason a retry cannot fix."""

    def __init__(self, message: str, *, reason: str = "ApplyFailed") -> None:
        super().__init__(message)
        self.reason = reason


def _body(exc: ApiError) -> str:
    return exc.body


def api_message(exc: ApiError) -> str:
    """The API server's own message (``Status.message``) or the raw body."""
    body = _body(exc)
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            return body.strip()
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
        return body.strip()
    return f"{exc.status} {exc.reason}"


def api_reason(exc: ApiError) -> str:
    """``Status.reason`` (``Invalid``, ``BadRequest``, ``NotFound``...) or the HTTP reason."""
    body = _body(exc)
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("reason"):
            return str(status["reason"])
    return str(exc.reason or exc.status)


def is_permanent(exc: BaseException) -> bool:
    """True for errors a retry cannot fix; everything else (5xx, 429, 409, network) is transient."""
    if isinstance(exc, PermanentApplyError | UnknownKindError):
        return True
    if isinstance(exc, ApiError):
        return exc.status in PERMANENT_STATUSES or _unapplicable(exc)
    return False


def _unapplicable(exc: ApiError) -> bool:
    """Server-side apply cannot express the object (e.g. duplicate keys of a list map): the API
    server answers 500, but the same request fails the same way every time."""
    return exc.status == 500 and api_message(exc).startswith("failed to create typed patch object")


def is_transient(exc: BaseException) -> bool:
    """Network trouble and retryable API answers."""
    if isinstance(exc, ApiError):
        return not is_permanent(exc)
    return isinstance(
        exc, TransientError | aiohttp.ClientError | asyncio.TimeoutError | ConnectionError | OSError
    )


def backoff_delay(deliveries: int, *, base: float, cap: float) -> float:
    """Exponential back-off for the n-th delivery (1-based): base, 2·base, 4·base... up to cap."""
    return float(min(cap, base * (2 ** max(0, deliveries - 1))))
