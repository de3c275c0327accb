"""Server-sent-event framing shared by the translated APIs."""

from __future__ import annotations

from typing import Any

import orjson


def event(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event with an ``event:`` line (both APIs name their events)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def chat_error_message(body: bytes) -> str:
    """The message of an engine's (OpenAI-shaped or FastAPI) error body, or the body itself."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode("utf-8", "replace")[:1000] or "the engine returned an error"
    if isinstance(payload, dict):
        error = payload.get("error", payload)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail")
            if isinstance(message, str):
                return message
        if isinstance(error, str):
            return error
    return str(payload)[:1000]


def tool_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's JSON arguments as an object (engines sometimes emit broken JSON)."""
    if isinstance(raw, dict):
        return raw
    try:
        value = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}
