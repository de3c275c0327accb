"""ExternalModelProvider targets (spec §1.3, §16) on a real router process, with the official
``openai`` client. A TLS server on loopback (a self-signed certificate, so the provider sets
``insecureSkipVerify``) stands in for the third-party API and refuses any other API key; the
key comes from a labelled Secret the way the watcher publishes it. Covered: the model name
mapping and the Bearer key, the weighted split between an in-cluster ModelServer and the
provider, the fallback to the provider while the ModelServer has no endpoints, a provider
without its credential (503, then served once the Secret appears), unsupported paths (400) and
the provider's own errors passed through."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import openai
import pytest
from ferry_local.readiness import free_port

from tests.support.loopback import self_signed, serve
from tests.support.router_world import (
    CHAT,
    Engine,
    RouterProcess,
    World,
    model_route,
    model_server,
    ns,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


API_KEY = "sk-ferry-test-0123"
UPSTREAM_MODEL = "provider-model-x"
CREDENTIAL_LABEL = "networking.serving.volcano.sh/external-model-provider-credential"


@dataclass
class FakeProvider:
    """What the loopback provider received: (path, Authorization header, JSON body)."""

    url: str
    received: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    raw_bodies: list[bytes] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def calls(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            return list(self.received)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()
            self.raw_bodies.clear()


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    fake = FakeProvider("")

    class OpenAICompatible(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            body = json.loads(raw)
            auth = self.headers.get("Authorization", "")
            with fake.lock:
                fake.received.append((self.path, auth, body))
                fake.raw_bodies.append(raw)
            if auth != f"Bearer {API_KEY}":
                error = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
                return self._send(401, error)
            if body.get("model") == "rate-limited":
                return self._send(429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}})
            usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
            if body.get("stream"):
                return self._stream(body, usage)
            if self.path == "/v1/chat/completions":
                message = {"role": "assistant", "content": "from the provider"}
                choice = {"index": 0, "message": message, "finish_reason": "stop"}
                answer = {"id": "ext-1", "object": "chat.completion", "created": 1, "model": body["model"]}
            else:
                choice = {"index": 0, "text": "from the provider", "finish_reason": "stop"}
                answer = {"id": "ext-1", "object": "text_completion", "created": 1, "model": body["model"]}
            self._send(200, {**answer, "choices": [choice], "usage": usage})

        def _stream(self, body: dict[str, Any], usage: dict[str, int]) -> None:
            """Two content chunks, then the usage chunk only when asked for (as OpenAI does)."""
            base = {"id": "ext-s", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
            chunks = [
                {**base, "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
                for word in ("from ", "the provider")
            ]
            if (body.get("stream_options") or {}).get("include_usage"):
                chunks.append({**base, "choices": [], "usage": usage})
            data = (
                b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
            )
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            pass

    tls = self_signed(tmp_path_factory.mktemp("provider-tls"))
    with serve(OpenAICompatible, tls) as (_, url):
        fake.url = f"{url}/v1"
        yield fake


def external_provider(namespace: str, name: str, base_url: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ExternalModelProvider",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "providerType": "OpenAI",
            "baseURL": base_url,
            "model": UPSTREAM_MODEL,
            "insecureSkipVerify": True,
            "auth": {"secretRef": {"name": secret, "key": "apiKey"}},
        },
    }


def credential(namespace: str, name: str, value: str, *, labelled: bool = True) -> dict[str, Any]:
    """A Secret as the watcher publishes it (labelled ones only, data and identity)."""
    labels = {CREDENTIAL_LABEL: "true"} if labelled else {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {"apiKey": base64.b64encode(value.encode()).decode()},
    }


async def split_route(
    bus: World, router: RouterProcess, provider: FakeProvider, weights: tuple[int, int]
) -> tuple[str, str, Engine]:
    """A ModelServer over one mock engine (no pods yet) and the provider, split by ``weights``."""
    namespace = ns()
    model = f"ext-{namespace}"
    engine = bus.engine(f"incluster-{namespace}", "in-cluster-model", free_port())
    await bus.publish(
        "modelservers",
        model_server(namespace, "srv", {"app": namespace}, engine.port, model="in-cluster-model"),
    )
    await bus.publish("secrets", credential(namespace, "provider-key", API_KEY))
    await bus.publish(
        "externalmodelproviders", external_provider(namespace, "ext", provider.url, "provider-key")
    )
    targets = [
        {"modelServerName": "srv", "weight": weights[0]},
        {"externalModelProviderName": "ext", "weight": weights[1]},
    ]
    spec = {"modelName": model, "rules": [{"targetModels": targets}]}
    await bus.publish("modelroutes", model_route(namespace, "route", spec))
    router.wait_model(model)
    engine.wait_up()
    return namespace, model, engine


def fallbacks(router: RouterProcess, route: str) -> float:
    prefix = f'ferry_router_target_fallbacks_total{{route="{route}"}} '
    for line in router.metrics().splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


async def test_weighted_split_and_fallback_between_in_cluster_and_external(
    bus: World, router: RouterProcess, provider: FakeProvider
) -> None:
    namespace, model, engine = await split_route(bus, router, provider, (90, 10))
    client = router.client()
    provider.clear()

    # the ModelServer has no endpoints yet: every request falls over to the provider
    for _ in range(10):
        answer = await client.chat.completions.create(model=model, messages=CHAT, max_tokens=2)  # type: ignore[arg-type]
        assert answer.choices[0].message.content == "from the provider"
        assert answer.model == UPSTREAM_MODEL
    calls = provider.calls()
    assert len(calls) == 10
    assert {(path, auth) for path, auth, _ in calls} == {("/v1/chat/completions", f"Bearer {API_KEY}")}
    assert {body["model"] for _, _, body in calls} == {UPSTREAM_MODEL}
    assert engine.requests() == []
    # 90 % of draws picked the empty ModelServer and were sent on instead
    assert await asyncio.to_thread(lambda: fallbacks(router, f"{namespace}/route")) >= 5

    # the pod appears: now the rule's weights split the traffic (90:10)
    await bus.pod(namespace, "pod-0", {"app": namespace}, engine.host)
    router.wait_endpoints(namespace, "srv", 1)
    provider.clear()
    gate = asyncio.Semaphore(16)

    async def one() -> str:
        async with gate:
            answer = await client.completions.create(model=model, prompt="p", max_tokens=1)
            return answer.model

    served = await asyncio.gather(*(one() for _ in range(400)))
    external = sum(1 for m in served if m == UPSTREAM_MODEL)
    assert len(provider.calls()) == external
    assert len(engine.requests()) == 400 - external
    # binomial(400, 0.1): sd = 6 requests; 4.5 sd is 27
    assert abs(external - 40) <= 27, external
    await client.close()


async def test_provider_credentials_paths_and_upstream_errors(
    bus: World, router: RouterProcess, provider: FakeProvider
) -> None:
    namespace = ns()
    model = f"only-ext-{namespace}"
    await bus.publish("externalmodelproviders", external_provider(namespace, "ext", provider.url, "key"))
    spec = {"modelName": model, "rules": [{"targetModels": [{"externalModelProviderName": "ext"}]}]}
    await bus.publish("modelroutes", model_route(namespace, "route", spec))
    router.wait_model(model)
    client = router.client()

    # no credential yet (an unlabelled Secret does not count): 503, nothing sent to the provider
    await bus.publish("secrets", credential(namespace, "key", API_KEY, labelled=False))
    provider.clear()
    with pytest.raises(openai.InternalServerError) as not_ready:
        await client.chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
    assert not_ready.value.status_code == 503
    assert f"external provider {namespace}/ext is not ready" in str(not_ready.value)
    assert provider.calls() == []

    # a wrong key is the provider's 401, passed through with its body
    await bus.publish("secrets", credential(namespace, "key", "sk-wrong"))
    sync = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=30)

    def status() -> tuple[int, object]:
        try:
            sync.chat.completions.create(model=model, messages=CHAT)  # type: ignore[arg-type]
        except openai.APIStatusError as exc:
            return exc.status_code, exc.body
        return 200, None

    refused = await asyncio.to_thread(wait_until, lambda: status()[0] == 401, "the provider's 401")
    assert refused
    code, body = status()
    assert isinstance(body, dict)
    assert (code, body["code"]) == (401, "invalid_api_key")
    assert provider.calls()[-1][1] == "Bearer sk-wrong"

    # the Secret is rotated to the right key: served without a restart
    await bus.publish("secrets", credential(namespace, "key", API_KEY))
    await asyncio.to_thread(wait_until, lambda: status()[0] == 200, "served with the rotated key")

    # embeddings are not an OpenAI provider path: 400 from the router
    with pytest.raises(openai.BadRequestError) as bad_path:
        await client.embeddings.create(model=model, input="text")
    assert "not supported by OpenAI providers" in str(bad_path.value)

    # the provider's own 4xx is passed through: a provider mapping the model to "rate-limited"
    limited = external_provider(namespace, "ext", provider.url, "key")
    limited["spec"]["model"] = "rate-limited"
    await bus.publish("externalmodelproviders", limited)

    await asyncio.to_thread(wait_until, lambda: status()[0] == 429, "the provider's 429")
    code, body = status()
    assert isinstance(body, dict)
    assert body["message"] == "slow down"

    sync.close()
    await client.close()


async def test_raw_body_forwarded_untouched_and_streams_report_usage(
    bus: World, router: RouterProcess, provider: FakeProvider
) -> None:
    """Without a model mapping the client's bytes reach the provider as they are (unknown fields
    too); a stream gets the usage chunk the router asked for, hidden from the client."""
    namespace = ns()
    model = f"raw-{namespace}"
    plain = external_provider(namespace, "ext", provider.url, "key")
    del plain["spec"]["model"]
    await bus.publish("secrets", credential(namespace, "key", API_KEY))
    await bus.publish("externalmodelproviders", plain)
    spec = {"modelName": model, "rules": [{"targetModels": [{"externalModelProviderName": "ext"}]}]}
    await bus.publish("modelroutes", model_route(namespace, "route", spec))
    router.wait_model(model)

    raw = (
        b'{"model":  "' + model.encode() + b'", "messages": [{"role": "user", "content": "hi"}],'
        b' "vendor_extension": {"keep": [1, 2.50]}}'
    )

    def post() -> int:
        request = urllib.request.Request(
            f"{router.url}/v1/chat/completions", raw, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)

    await asyncio.to_thread(wait_until, lambda: post() == 200, "the provider ready")
    assert provider.raw_bodies[-1] == raw

    def counted() -> int:
        lines = router.access_log.read_text().splitlines()
        return sum(1 for line in lines if f"{namespace}/route" in line and '"output_tokens":2' in line)

    provider.clear()
    before = await asyncio.to_thread(wait_until, counted, "the plain request in the access log")
    client = router.client()
    stream = await client.chat.completions.create(model=model, messages=CHAT, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "from the provider"
    assert all(c.usage is None for c in chunks)  # the usage chunk the router asked for is hidden
    _, _, sent = provider.calls()[-1]
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == model

    await asyncio.to_thread(wait_until, lambda: counted() > before, "the stream's usage in the access log")
    await client.close()
