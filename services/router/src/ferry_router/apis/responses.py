"""The OpenAI Responses API (``POST /v1/responses``) over an engine's chat completions.

Request: ``instructions`` becomes a system message; ``input`` (a string, or message,
``function_call`` and ``function_call_output`` items) becomes ``messages``; ``max_output_tokens``,
function ``tools``, ``tool_choice``, ``text.format`` and ``reasoning.effort`` map to their chat
names. The router keeps no conversation state, so ``previous_response_id`` and ``background``
are refused (400), as are built-in tools. Answer: a ``response`` object whose ``output`` holds a
message item and one ``function_call`` item per tool call. Streamed: ``response.created``,
``response.in_progress``, per item ``response.output_item.added`` … ``.done`` with
``response.output_text.delta`` / ``response.function_call_arguments.delta`` in between, then
``response.completed`` (``response.incomplete`` when the engine hit ``max_output_tokens``), each
event numbered by ``sequence_number``; a broken stream ends with an ``error`` event.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from ferry_router import errors
from ferry_router.apis.sse import event

RESPONSES_PATH = "/v1/responses"
ECHOED = ("instructions", "max_output_tokens", "temperature", "top_p", "tool_choice", "metadata", "user")
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})


def invalid(param: str, message: str) -> errors.RouterError:
    return errors.invalid_param(param, message)


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    """Responses content (a string or input parts) as chat content."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise invalid(f"{where}.content", "content must be a string or a list of content parts")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in TEXT_PARTS and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            image = {"url": part["image_url"], **({"detail": part["detail"]} if "detail" in part else {})}
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise invalid(f"{where}.content[{j}]", f"content part type {kind!r} is not supported")
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise invalid("instructions", "'instructions' must be a string")
        messages.append({"role": "system", "content": instructions})
    raw = body.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
        return messages
    if not isinstance(raw, list):
        raise invalid("input", "'input' must be a string or a list of input items")
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid(f"input[{i}]", "an input item must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise invalid(f"input[{i}].role", f"role {role!r} is not one of user, assistant, system")
            content = _content(item.get("content"), f"input[{i}]")
            messages.append({"role": "system" if role == "developer" else role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else orjson.dumps(output).decode()
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind == "reasoning":
            continue  # the engine's own earlier reasoning: not part of a chat prompt
        else:
            raise invalid(f"input[{i}].type", f"input item type {kind!r} is not supported by this router")
    return messages


def _tools(body: dict[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise invalid("tools", "'tools' must be a list")
        converted = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise invalid(f"tools[{i}].type", f"only function tools are supported, not {kind!r}")
            function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
            converted.append({"type": "function", "function": function})
        chat["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        raise invalid("tool_choice", "'tool_choice' must be auto, none, required or a function")
    if "parallel_tool_calls" in body:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _format(body: dict[str, Any], chat: dict[str, Any]) -> None:
    text = body.get("text")
    fmt = text.get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise invalid("text.format.type", f"text format {fmt['type']!r} is not supported")


def _usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not usage:
        return None
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class ResponsesApi:
    """One ``/v1/responses`` request (and, streamed, its translation state)."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.id = _new_id("resp")
        self.created = int(time.time())
        self.model = str(body.get("model", ""))
        self.sequence = 0
        self.started = False
        self.output: list[dict[str, Any]] = []  # finished items
        self.open: dict[str, Any] | None = None  # the item being streamed
        self.open_call: int | None = None  # the chat tool-call index of an open function_call
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None

    # ------------------------------------------------------------------ request

    def chat_request(self) -> dict[str, Any]:
        body = self.body
        for param in ("previous_response_id", "conversation"):
            if body.get(param) is not None:
                raise invalid(
                    param, f"'{param}' needs stored responses; send the whole conversation in 'input'"
                )
        if body.get("background"):
            raise invalid("background", "background responses are not supported by this router")
        chat: dict[str, Any] = {"model": body.get("model"), "messages": _messages(body)}
        for name in ("temperature", "top_p", "user", "seed", "top_logprobs"):
            if body.get(name) is not None:
                chat[name] = body[name]
        if body.get("max_output_tokens") is not None:
            chat["max_tokens"] = body["max_output_tokens"]
        reasoning = body.get("reasoning")
        if isinstance(reasoning, dict) and reasoning.get("effort"):
            chat["reasoning_effort"] = reasoning["effort"]
        _tools(body, chat)
        _format(body, chat)
        if body.get("stream") is True:
            chat["stream"] = True
            chat["stream_options"] = {"include_usage": True}
        return chat

    # ------------------------------------------------------------------ answers

    def _response(self, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        body = self.body
        text = body.get("text") if isinstance(body.get("text"), dict) else {"format": {"type": "text"}}
        response: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": output,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": None,
            "store": False,
            "text": text,
            "tools": body.get("tools") or [],
            "usage": self.usage,
        }
        for name in ECHOED:
            response[name] = body.get(name)
        response["tool_choice"] = body.get("tool_choice", "auto")
        response["metadata"] = body.get("metadata") or {}
        return response

    def answer(self, chat: dict[str, Any]) -> bytes:
        choices = chat.get("choices") or [{}]
        choice = choices[0] if isinstance(choices[0], dict) else {}
        message = choice.get("message") or {}
        self.model = str(chat.get("model") or self.model)
        self.usage = _usage(chat.get("usage"))
        output: list[dict[str, Any]] = []
        if message.get("content"):
            output.append(_message_item(_new_id("msg"), message["content"], "completed"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            output.append(
                _call_item(
                    _new_id("fc"),
                    call.get("id") or _new_id("call"),
                    function.get("name", ""),
                    function.get("arguments") or "",
                    "completed",
                )
            )
        status = "incomplete" if choice.get("finish_reason") == "length" else "completed"
        return orjson.dumps(self._response(status, output))

    def upstream_error(self, status: int, body: bytes) -> bytes:
        return body  # the engine's error already has the OpenAI shape this API uses

    # ------------------------------------------------------------------ streaming

    def _event(self, kind: str, **fields: Any) -> bytes:
        self.sequence += 1
        return event(kind, {"type": kind, "sequence_number": self.sequence - 1, **fields})

    def _start(self, chunk: dict[str, Any]) -> bytes:
        self.started = True
        self.model = str(chunk.get("model") or self.model)
        response = self._response("in_progress", [])
        return self._event("response.created", response=response) + self._event(
            "response.in_progress", response=response
        )

    def _close_open(self) -> bytes:
        item, self.open, self.open_call = self.open, None, None
        if item is None:
            return b""
        index = len(self.output)
        item["status"] = "completed"
        self.output.append(item)
        if item["type"] == "message":
            part = item["content"][0]
            out = self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            out += self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        else:
            out = self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                arguments=item["arguments"],
            )
        return out + self._event("response.output_item.done", output_index=index, item=item)

    def events(self, chunk: dict[str, Any]) -> bytes:
        out = b"" if self.started else self._start(chunk)
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                out += self._text(text)
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        index = len(self.output)
        if self.open is None or self.open["type"] != "message":
            out += self._close_open()
            index = len(self.output)
            self.open = _message_item(_new_id("msg"), "", "in_progress")
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event(
                "response.output_item.added", output_index=index, item={**self.open, "content": []}
            )
            out += self._event(
                "response.content_part.added",
                item_id=self.open["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
        self.open["content"][0]["text"] += text
        return out + self._event(
            "response.output_text.delta",
            item_id=self.open["id"],
            output_index=index,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        function = call.get("function") or {}
        if self.open is None or self.open_call != index:
            out += self._close_open()
            self.open = _call_item(
                _new_id("fc"),
                call.get("id") or _new_id("call"),
                function.get("name") or "",
                "",
                "in_progress",
            )
            self.open_call = index
            out += self._event(
                "response.output_item.added", output_index=len(self.output), item=dict(self.open)
            )
        arguments = function.get("arguments")
        if arguments:
            self.open["arguments"] += arguments
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=self.open["id"],
                output_index=len(self.output),
                delta=arguments,
            )
        return out

    def end(self) -> bytes:
        out = b"" if self.started else self._start({})
        out += self._close_open()
        status = "incomplete" if self.finish == "length" else "completed"
        return out + self._event(f"response.{status}", response=self._response(status, self.output))

    def failed(self, message: str, code: str) -> bytes:
        return self._event("error", code=code, message=message, param=None)


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }
