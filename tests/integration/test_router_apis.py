"""``/v1/responses`` (OpenAI Responses API) and ``/v1/messages`` (Anthropic Messages API) on a real
router process in front of a real mock engine that serves only chat completions, driven by the
official ``openai`` and ``anthropic`` clients: answers and streams arrive in each API's own
format, the engine receives the translated chat request, usage reaches the router's metrics, and
requests the router cannot serve get a 4xx in the API's own error shape."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest
from ferry_local.readiness import free_port

from tests.support.router_world import Engine, RouterProcess, World, model_route, model_server, ns

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def serve_model(bus: World, router: RouterProcess) -> tuple[str, Engine]:
    namespace, port = ns(), free_port()
    engine = bus.engine(f"apis-{namespace}", "org/chat-only", port)
    engine.wait_up()
    labels = {"app": f"apis-{namespace}"}
    await bus.publish("modelservers", model_server(namespace, "srv", labels, port, model="org/chat-only"))
    model = f"apis-{namespace}"
    spec = {"modelName": model, "rules": [{"targetModels": [{"modelServerName": "srv"}]}]}
    await bus.publish("modelroutes", model_route(namespace, "route", spec))
    await bus.pod(namespace, "pod-0", labels, engine.host)
    router.wait_endpoints(namespace, "srv", 1)
    router.wait_model(model)
    return model, engine


def anthropic_client(router: RouterProcess) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=router.url, api_key="unused", max_retries=0, timeout=30)


async def test_responses_api_answers_streams_and_errors(bus: World, router: RouterProcess) -> None:
    model, engine = await serve_model(bus, router)
    client = router.client()

    answer = await client.responses.create(
        model=model, instructions="Be brief.", input="Say hello to the router", max_output_tokens=6
    )
    assert answer.object == "response"
    assert answer.id.startswith("resp_")
    assert answer.status in ("completed", "incomplete")
    assert answer.output_text
    assert answer.usage is not None
    assert answer.usage.output_tokens > 0
    assert answer.usage.input_tokens > 0
    sent = engine.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"  # translated: the engine serves chat only
    assert sent["model"] == "org/chat-only"

    events: list[Any] = []
    async for ev in await client.responses.create(
        model=model,
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Stream to me"}]}],
        max_output_tokens=6,
        stream=True,
    ):
        events.append(ev)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert "response.output_item.added" in kinds
    assert "response.output_item.done" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert streamed
    assert final.output_text == streamed
    assert final.usage is not None
    assert final.usage.output_tokens > 0

    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=model, input="again", previous_response_id="resp_earlier")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.responses.create(model=model, input=[{"type": "web_search_call", "id": "x"}])  # type: ignore[list-item]
    assert bad.value.body["param"] == "input[0].type"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.responses.create(model=f"nope-{model}", input="hello")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]

    assert "kthena_router_tokens_total{" in router.metrics()
    await client.close()


async def test_messages_api_answers_streams_and_errors(bus: World, router: RouterProcess) -> None:
    model, engine = await serve_model(bus, router)
    client = anthropic_client(router)

    message = await client.messages.create(
        model=model,
        max_tokens=6,
        system="Be brief.",
        messages=[{"role": "user", "content": "Say hello to the router"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    sent = engine.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["model"] == "org/chat-only"

    kinds: list[str] = []
    async with client.messages.stream(
        model=model,
        max_tokens=6,
        messages=[{"role": "user", "content": [{"type": "text", "text": "Stream"}]}],
    ) as stream:
        texts = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(texts)
    assert final.content[0].text == "".join(texts)
    assert final.usage.output_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")

    raw = await client.messages.create(
        model=model, max_tokens=4, messages=[{"role": "user", "content": "raw events"}], stream=True
    )
    async for event in raw:
        kinds.append(event.type)
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)

    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(
            model=model,
            max_tokens=4,
            messages=[{"role": "robot", "content": "hi"}],  # type: ignore[typeddict-item]
        )
    assert bad.value.body == {  # Anthropic's error shape, not OpenAI's
        "type": "error",
        "error": {"type": "invalid_request_error", "message": bad.value.body["error"]["message"]},  # type: ignore[index]
    }
    assert "messages.0.role" in bad.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(
            model=f"nope-{model}", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    # max_tokens is required by the Messages API (the SDK insists too, so raw HTTP)
    async with httpx.AsyncClient(timeout=10) as http:
        no_max = await http.post(
            f"{router.url}/v1/messages",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        )
    assert no_max.status_code == 400
    assert no_max.json()["error"]["message"].startswith("max_tokens")
    await client.close()
