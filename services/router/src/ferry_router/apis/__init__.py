"""Client APIs the router serves through an engine's chat completions (OpenAI Responses,
Anthropic Messages).

A ModelServer's engine is only known to serve ``/v1/chat/completions`` (vLLM and SGLang both
do; the Responses and Messages APIs depend on the engine and its version), so a request to
``/v1/responses`` or ``/v1/messages`` for an in-cluster target is translated: the request body
into a chat request, the engine's answer (or its SSE chunks) back into the client API's own
object (or event stream), and errors into that API's error shape. ``FERRY_ROUTER_NATIVE_APIS``
lists paths whose engines serve the API themselves; those are proxied as they are.
External providers always get the client's own API (spec §16).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from ferry_router.apis.messages import MESSAGES_PATH, MessagesApi
from ferry_router.apis.responses import RESPONSES_PATH, ResponsesApi

CHAT_PATH = "/v1/chat/completions"
TRANSLATED_PATHS = frozenset({RESPONSES_PATH, MESSAGES_PATH})


class ClientApi(Protocol):
    """One request of a client API served through chat completions. ``chat_request`` is called
    once (it validates; a bad body is a 400 :class:`~ferry_router.errors.RouterError`); the
    answer is then translated by ``answer`` or, streamed, by ``events`` per chunk and ``end``."""

    def chat_request(self) -> dict[str, Any]: ...

    def answer(self, chat: dict[str, Any]) -> bytes: ...

    def events(self, chunk: dict[str, Any]) -> bytes: ...

    def end(self) -> bytes: ...

    def failed(self, message: str, code: str) -> bytes: ...

    def upstream_error(self, status: int, body: bytes) -> bytes: ...


CLIENT_API = web.RequestKey("ferry.client_api", ClientApi)
"""Request-scoped: the API the answer must be translated into (absent: relay as it is)."""


def client_api(path: str, body: dict[str, Any]) -> ClientApi | None:
    """The translator for ``path``, or None when the path is proxied as it is."""
    if path == RESPONSES_PATH:
        return ResponsesApi(body)
    if path == MESSAGES_PATH:
        return MessagesApi(body)
    return None
