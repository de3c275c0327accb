"""Translation of the Responses and Messages APIs to and from chat completions (pure functions)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from ferry_router import errors
from ferry_router.apis.messages import MessagesApi
from ferry_router.apis.responses import ResponsesApi


def sse(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for block in data.strip().split(b"\n\n"):
        name, payload = block.split(b"\n", 1)
        out.append((name.removeprefix(b"event: ").decode(), orjson.loads(payload.removeprefix(b"data: "))))
    return out


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


TOOL_DELTAS = [
    chunk({"content": "Let me look."}),
    chunk(
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": '{"ci'}}]}
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}, "tool_calls"),
    {"model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}},
]


def test_responses_request_maps_items_tools_and_format() -> None:
    api = ResponsesApi(
        {
            "model": "m",
            "instructions": "be brief",
            "input": [
                {"role": "developer", "content": "rules"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
            "max_output_tokens": 9,
            "stream": True,
        }
    )
    chat = api.chat_request()
    assert [m["role"] for m in chat["messages"]] == ["system", "system", "user", "assistant", "tool"]
    assert chat["messages"][3]["tool_calls"][0]["function"] == {"name": "weather", "arguments": "{}"}
    assert chat["messages"][4] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["response_format"]["json_schema"]["name"] == "w"
    assert chat["max_tokens"] == 9
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": 3}, "input"),
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ],
)
def test_responses_request_refusals_name_the_parameter(body: dict[str, Any], param: str) -> None:
    with pytest.raises(errors.RouterError) as caught:
        ResponsesApi({"model": "m", **body}).chat_request()
    assert caught.value.status == 400
    assert caught.value.param == param


def test_responses_answer_and_stream_with_a_tool_call() -> None:
    message = {
        "role": "assistant",
        "content": "Let me look.",
        "tool_calls": [{"id": "call_1", "function": {"name": "weather", "arguments": "{}"}}],
    }
    chat = {"model": "m", "choices": [{"message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}  # fmt: skip
    answer = orjson.loads(ResponsesApi({"model": "m", "input": "x"}).answer(chat))
    assert [item["type"] for item in answer["output"]] == ["message", "function_call"]
    assert answer["output"][1]["call_id"] == "call_1"
    assert answer["usage"]["total_tokens"] == 12

    api = ResponsesApi({"model": "m", "input": "x", "stream": True})
    data = b"".join(api.events(c) for c in TOOL_DELTAS) + api.end()
    events = sse(data)
    assert [p["sequence_number"] for _, p in events] == list(range(len(events)))
    assert all(name == p["type"] for name, p in events)
    names = [name for name, _ in events]
    assert names[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert names.index("response.output_text.done") < names.index("response.function_call_arguments.delta")
    done = events[-1][1]["response"]
    assert events[-1][0] == "response.completed"
    assert done["output"][0]["content"][0]["text"] == "Let me look."
    assert done["output"][1]["arguments"] == '{"city": "Oslo"}'
    assert done["usage"]["output_tokens"] == 7


def test_messages_request_maps_blocks_tools_and_stops() -> None:
    api = MessagesApi(
        {
            "model": "m",
            "max_tokens": 20,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "w", "input": {"c": 1}}],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}],
                },
            ],
            "tools": [{"name": "w", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u1"},
        }
    )
    chat = api.chat_request()
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool"]
    assert chat["messages"][2]["tool_calls"][0]["function"] == {"name": "w", "arguments": '{"c":1}'}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "t1", "content": "sunny"}
    assert chat["tool_choice"] == "required"
    assert chat["stop"] == ["END"]
    assert chat["user"] == "u1"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        ({"max_tokens": 5, "messages": []}, "messages"),
        (
            {"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages.0.content.0.type",
        ),
    ],
)
def test_messages_refusals(body: dict[str, Any], where: str) -> None:
    with pytest.raises(errors.RouterError) as caught:
        MessagesApi({"model": "m", **body}).chat_request()
    assert caught.value.status == 400
    assert caught.value.message.startswith(where)
    assert orjson.loads(caught.value.body(anthropic=True))["error"]["type"] == "invalid_request_error"


def test_messages_answer_and_stream_with_a_tool_call() -> None:
    choice = {"message": {"content": "done"}, "finish_reason": "stop", "stop_reason": "END"}
    chat = {"model": "m", "choices": [choice], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    answer = orjson.loads(MessagesApi({"model": "m"}).answer(chat))
    assert answer["stop_reason"] == "stop_sequence"
    assert answer["stop_sequence"] == "END"
    assert answer["usage"] == {"input_tokens": 3, "output_tokens": 1}

    api = MessagesApi({"model": "m"})
    events = sse(b"".join(api.events(c) for c in TOOL_DELTAS) + api.end())
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[4][1]["content_block"]["type"] == "tool_use"
    assert events[4][1]["index"] == 1
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"input_tokens": 5, "output_tokens": 7}
    failed = sse(api.failed("cut", "upstream_stream_timeout"))
    assert failed[0][0] == "error"
    assert failed[0][1]["error"]["type"] == "api_error"
