"""The Anthropic Messages API (``POST /v1/messages``) over an engine's chat completions.

Request: ``system`` (a string or text blocks) becomes a system message; ``messages`` with text,
image, ``tool_use`` and ``tool_result`` blocks become chat messages (tool results as ``tool``
messages); ``max_tokens`` (required, as in Anthropic's API), ``stop_sequences``, ``temperature``,
``top_p``, ``top_k``, ``tools`` (``input_schema`` → function parameters), ``tool_choice`` and
``metadata.user_id`` map to their chat names. Answer: a ``message`` with text and ``tool_use``
blocks and Anthropic's ``stop_reason``. Streamed: ``message_start``, per block
``content_block_start`` / ``content_block_delta`` (``text_delta``, ``input_json_delta``) /
``content_block_stop``, then ``message_delta`` (stop reason, usage) and ``message_stop``; a broken
stream ends with an ``error`` event. Errors have Anthropic's shape
(``{"type": "error", "error": {"type": ..., "message": ...}}``).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from ferry_router import errors
from ferry_router.apis.sse import chat_error_message, event, tool_arguments

MESSAGES_PATH = "/v1/messages"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def invalid(param: str, message: str) -> errors.RouterError:
    return errors.invalid_param(param, f"{param}: {message}")


def _text(blocks: Any, where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise invalid(where, "must be a string or a list of text blocks")
    texts = []
    for j, block in enumerate(blocks):
        if (
            not isinstance(block, dict)
            or block.get("type") != "text"
            or not isinstance(block.get("text"), str)
        ):
            raise invalid(f"{where}.{j}", "only text blocks are allowed here")
        texts.append(block["text"])
    return "\n".join(texts)


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif isinstance(source, dict) and source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise invalid(f"{where}.source", "an image source must be base64 or url")
    return {"type": "image_url", "image_url": {"url": url}}


def _message(message: Any, i: int) -> list[dict[str, Any]]:
    """One Anthropic message as chat messages (tool results become ``tool`` messages)."""
    where = f"messages.{i}"
    if not isinstance(message, dict):
        raise invalid(where, "a message must be an object")
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"{where}.role", f"must be 'user' or 'assistant', not {role!r}")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "must be a string or a list of content blocks")
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type") if isinstance(block, dict) else None
        at = f"{where}.content.{j}"
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            inner = block.get("content", "")
            text = (
                inner
                if isinstance(inner, str)
                else _text(
                    [b for b in inner if isinstance(b, dict) and b.get("type") == "text"], f"{at}.content"
                )
            )
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text})
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise invalid(f"{at}.type", f"content block type {kind!r} is not supported here")
    out: list[dict[str, Any]] = list(results)
    if parts or calls:
        chat: dict[str, Any] = {"role": role}
        if all(p["type"] == "text" for p in parts):
            chat["content"] = "\n".join(p["text"] for p in parts) if parts else None
        else:
            chat["content"] = parts
        if calls:
            chat["tool_calls"] = calls
        out.append(chat)
    return out


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid("tools", "must be a list")
        converted = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("input_schema"), dict):
                raise invalid(f"tools.{i}", "only custom tools with an input_schema are supported")
            function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
            if "description" in tool:
                function["description"] = tool["description"]
            converted.append({"type": "function", "function": function})
        chat["tools"] = converted
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "any", "none"):
        chat["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise invalid("tool_choice.type", "must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


class MessagesApi:
    """One ``/v1/messages`` request (and, streamed, its translation state)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model = str(body.get("model", ""))
        self.started = False
        self.index = -1  # the open content block (-1: none)
        self.open_kind: str | None = None
        self.open_call: int | None = None
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0

    # ------------------------------------------------------------------ request

    def chat_request(self) -> dict[str, Any]:
        body = self.body
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise invalid("max_tokens", "Field required (a positive integer)")
        raw = body.get("messages")
        if not isinstance(raw, list) or not raw:
            raise invalid("messages", "Field required (a non-empty list of messages)")
        messages: list[dict[str, Any]] = []
        if body.get("system") is not None:
            messages.append({"role": "system", "content": _text(body["system"], "system")})
        for i, message in enumerate(raw):
            messages.extend(_message(message, i))
        chat: dict[str, Any] = {"model": body.get("model"), "messages": messages, "max_tokens": max_tokens}
        for name in ("temperature", "top_p", "top_k"):
            if body.get(name) is not None:
                chat[name] = body[name]
        stops = body.get("stop_sequences")
        if stops is not None:
            if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
                raise invalid("stop_sequences", "must be a list of strings")
            chat["stop"] = stops
        metadata = body.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
            chat["user"] = metadata["user_id"]
        _tools(body, chat)
        if body.get("stream") is True:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        return chat

    # ------------------------------------------------------------------ answers

    def _stop(self, choice: dict[str, Any]) -> None:
        finish = choice.get("finish_reason")
        matched = choice.get("stop_reason")  # vLLM: the stop string that ended the answer
        if finish == "stop" and isinstance(matched, str):
            self.stop_reason, self.stop_sequence = "stop_sequence", matched
        else:
            self.stop_reason = STOP_REASONS.get(str(finish), "end_turn")

    def _usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self.input_tokens = int(usage.get("prompt_tokens") or 0)
            self.output_tokens = int(usage.get("completion_tokens") or 0)

    def answer(self, chat: dict[str, Any]) -> bytes:
        choices = chat.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        self._stop(choice)
        self._usage(chat.get("usage"))
        content: list[dict[str, Any]] = []
        if message.get("content"):
            content.append({"type": "text", "text": message["content"]})
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            content.append(
                {
                    "type": "tool_use",
                    "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                    "name": function.get("name", ""),
                    "input": tool_arguments(function.get("arguments")),
                }
            )
        return orjson.dumps({**self._message(str(chat.get("model") or self.model)), "content": content})

    def _message(self, model: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": self.stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens},
        }

    def upstream_error(self, status: int, body: bytes) -> bytes:
        return errors.anthropic_error_body(status, chat_error_message(body))

    # ------------------------------------------------------------------ streaming

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        self.model = str(chunk.get("model") or self.model)
        return event("message_start", {"type": "message_start", "message": self._message(self.model)})

    def _close_block(self) -> bytes:
        if self.open_kind is None:
            return b""
        self.open_kind, self.open_call = None, None
        return event("content_block_stop", {"type": "content_block_stop", "index": self.index})

    def _open_block(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self.index += 1
        self.open_kind = block["type"]
        start = {"type": "content_block_start", "index": self.index, "content_block": block}
        return out + event("content_block_start", start)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta}
        )

    def events(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start(chunk)
        self._usage(chunk.get("usage"))
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.open_kind != "text":
                    out += self._open_block({"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": text})
            for call in delta.get("tool_calls") or []:
                function = call.get("function") or {}
                if self.open_kind != "tool_use" or self.open_call != call.get("index", 0):
                    block: dict[str, Any] = {
                        "type": "tool_use",
                        "id": call.get("id") or f"toolu_{uuid.uuid4().hex}",
                        "name": function.get("name") or "",
                        "input": {},
                    }
                    out += self._open_block(block)
                    self.open_call = call.get("index", 0)
                if function.get("arguments"):
                    out += self._delta({"type": "input_json_delta", "partial_json": function["arguments"]})
            if choice.get("finish_reason"):
                self._stop(choice)
        return out

    def end(self) -> bytes:
        out = b"" if self.started else self._start({})
        out += self._close_block()
        delta = {"stop_reason": self.stop_reason or "end_turn", "stop_sequence": self.stop_sequence}
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        out += event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        return out + event("message_stop", {"type": "message_stop"})

    def failed(self, message: str, code: str) -> bytes:
        return event(
            "error", {"type": "error", "error": {"type": "api_error", "message": f"{code}: {message}"}}
        )
