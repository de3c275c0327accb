"""``ferry chat``: an OpenAI chat completion streamed through Ferry's router (server-sent events)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from ferry_cli.errors import CliError


@dataclass
class ChatResult:
    """What one streamed answer produced."""

    text: str = ""
    chunks: int = 0
    model: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


def _error_message(response: httpx.Response) -> str:
    try:
        error = json.loads(response.read()).get("error") or {}
        return f"{error.get('code') or error.get('type') or response.status_code}: {error.get('message', '')}"
    except (ValueError, AttributeError):
        return f"{response.status_code} {response.text[:300]}"


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event: dict[str, Any] = json.loads(data)
        if "error" in event:
            raise CliError(f"the router reported an error mid-stream: {event['error']}")
        yield event


def stream_chat(
    router: str,
    model: str,
    messages: list[dict[str, str]],
    on_text: Callable[[str], None],
    *,
    max_tokens: int | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
) -> ChatResult:
    """POST ``/v1/chat/completions`` with ``stream: true``; ``on_text`` gets each delta as it arrives."""
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = router.rstrip("/") + "/v1/chat/completions"
    result = ChatResult()
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0)) as http,
            http.stream("POST", url, json=body, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise CliError(f"the router at {router} refused the request: {_error_message(response)}")
            for event in _events(response):
                result.chunks += 1
                result.model = event.get("model", result.model)
                if event.get("usage"):
                    result.usage = event["usage"]
                for choice in event.get("choices") or []:
                    if text := (choice.get("delta") or {}).get("content"):
                        result.text += text
                        on_text(text)
    except httpx.ConnectError as exc:
        raise CliError(
            f"cannot reach the router at {router} ({exc}); set --router or FERRY_ROUTER_URL "
            "(in a cluster: `kubectl -n ferry-system port-forward svc/ferry-router 8080:80`)"
        ) from exc
    except httpx.TimeoutException as exc:
        raise CliError(f"the router at {router} did not answer within {timeout:.0f}s") from exc
    return result
