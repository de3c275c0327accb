"""The mock engine's HTTP server: vLLM's OpenAI API, LoRA admin, /health, /metrics and /mock/*.

Inference: ``POST /v1/chat/completions`` and ``/v1/completions`` (streaming SSE and not).
Models: ``GET /v1/models`` (served names and loaded LoRA adapters), ``POST /v1/load_lora_adapter``,
``POST /v1/unload_lora_adapter``, ``POST /tokenize``.
Probes: ``GET /health``, ``/ping``, ``/version``, ``/metrics``.
Inspection for tests: ``GET /mock/requests`` (``DELETE`` clears), ``GET /mock/info``,
``POST /mock/config`` (change ``ttft``/``itl`` seconds, or ``fail_status`` + ``fail_count`` to
answer the next requests with an error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ferry_mock_engine.config import EngineConfig, LoraModule, Role
from ferry_mock_engine.generation import (
    BadRequest,
    answer_tokens,
    count_tokens,
    output_token_budget,
    prompt_hash,
    prompt_text,
    token_ids,
)
from ferry_mock_engine.identity import CHALLENGE_HEADER, PROOF_HEADER, proof
from ferry_mock_engine.kv_events import KVEvent, KVEventsConfig, ZmqPublisher
from ferry_mock_engine.kvcache import BlockPool
from ferry_mock_engine.metrics import EngineMetrics, Load
from ferry_mock_engine.openai_format import Completion, error_body, sse, usage
from ferry_mock_engine.pd import PdRequest, classify, prefill_transfer_params
from ferry_mock_engine.profiles import profile_named
from ferry_mock_engine.records import RequestLog, RequestRecord
from ferry_mock_engine.simulator import END, Simulator

log = logging.getLogger(__name__)

_INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions")


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Job:
    """One admitted inference request and how to answer it."""

    record: RequestRecord
    pd: PdRequest
    completion: Completion
    prompt: str
    tokens: list[str]
    finish_reason: str
    headers: dict[str, str]
    include_usage: bool = False
    prompt_ids: list[int] | None = None  # the prompt's token ids (simulator only)

    def usage(self) -> dict[str, int]:
        return usage(self.record.prompt_tokens, len(self.tokens))


@dataclass
class FaultInjection:
    status: int | None = None
    remaining: int = 0


class MockEngine:
    """One engine: ``await start()`` binds ``config.host``/``config.bind_port`` (0 = any free port)."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.load = Load()
        self.publisher: ZmqPublisher | None = None
        self.sim: Simulator | None = None
        if config.profile is not None:
            self.sim = Simulator(
                profile_named(config.profile),
                BlockPool(config.kv_cache_blocks, config.block_size, config.enable_prefix_caching),
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                time_scale=config.time_scale,
                publish=self._publish,
            )
        self.metrics = EngineMetrics(config, self.load, self.sim)
        self.log = RequestLog(limit=config.max_recorded_requests)
        self.loras: dict[str, LoraModule] = {m.name: m for m in config.lora_modules}
        # vLLM's lora_int_id: a counter over loads (1, 2, ... in --lora-modules order, then each
        # /v1/load_lora_adapter), never reused after an unload; it is what KV events carry.
        self.lora_ids: dict[str, int] = {name: i for i, name in enumerate(self.loras, start=1)}
        self._last_lora_id = len(self.lora_ids)
        self.fault = FaultInjection()
        self._slots = asyncio.Semaphore(max(1, config.max_num_seqs))
        self._runner: web.AppRunner | None = None
        self._runtime_runner: web.AppRunner | None = None
        """Kthena's runtime sidecar, emulated: its ``/metrics`` on ``config.runtime_port``."""
        self.port = config.bind_port
        self.started = time.time()

    # ------------------------------------------------------------------ lifecycle
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for path in _INFERENCE_PATHS:
            app.router.add_post(path, self._inference)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/reset_prefix_cache", self._reset_prefix_cache)
        app.router.add_post("/v1/load_lora_adapter", self._load_lora)
        app.router.add_post("/v1/unload_lora_adapter", self._unload_lora)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ping", self._health)
        app.router.add_get("/ready", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/mock/requests", self._list_requests)
        app.router.add_delete("/mock/requests", self._clear_requests)
        app.router.add_get("/mock/info", self._info)
        app.router.add_post("/mock/config", self._set_config)
        return app

    async def start(self) -> str:
        """Start serving; returns the base URL (``http://host:port``)."""
        self._runner = web.AppRunner(self.build_app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.bind_port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        if not self.config.engine_id:
            self.config.engine_id = f"{self._advertised_host()}:{self.port}"
        events = KVEventsConfig.parse(self.config.kv_events_config or "{}")
        if events.enable and self.sim is not None:
            self.publisher = ZmqPublisher(events, self.config.host)
        if self.sim is not None:
            self.sim.start()
            log.info(
                "simulating profile %s: %d KV blocks of %d tokens, max %d seqs, time scale %g",
                self.config.profile, self.config.kv_cache_blocks, self.config.block_size,
                self.config.max_num_seqs, self.config.time_scale,
            )  # fmt: skip
        if self.config.runtime_port is not None:
            runtime = web.Application()
            runtime.router.add_get("/metrics", self._runtime_metrics)
            runtime.router.add_get("/health", self._health)
            self._runtime_runner = web.AppRunner(runtime, access_log=None, shutdown_timeout=1.0)
            await self._runtime_runner.setup()
            runtime_site = web.TCPSite(
                self._runtime_runner, self.config.host, self.config.runtime_port, reuse_address=True
            )
            await runtime_site.start()
        log.info(
            "mock engine %s serving %s on %s (role %s, connector %s)",
            self.config.engine_id, self.config.names, self.url, self.config.role.value,
            self.config.connector.value,
        )  # fmt: skip
        return self.url

    async def stop(self) -> None:
        if self._runtime_runner is not None:
            await self._runtime_runner.cleanup()
            self._runtime_runner = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.sim is not None:
            await self.sim.stop()
        if self.publisher is not None:
            self.publisher.close()
            self.publisher = None

    def _publish(self, events: list[KVEvent]) -> None:
        if self.publisher is not None:
            self.publisher.publish(events)

    def _advertised_host(self) -> str:
        host = self.config.host
        if host in {"", "0.0.0.0", "::"}:
            try:
                return socket.gethostbyname(socket.gethostname())
            except OSError:
                return "127.0.0.1"
        return host

    @property
    def url(self) -> str:
        host = self._advertised_host()
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    @property
    def requests(self) -> list[RequestRecord]:
        return self.log.all()

    # ------------------------------------------------------------------ inference
    async def _inference(self, request: web.Request) -> web.StreamResponse:
        record = RequestRecord(
            id=uuid.uuid4().hex,
            time=time.time(),
            method=request.method,
            path=request.path,
            headers={k.lower(): v for k, v in request.headers.items()},
        )
        self.log.add(record)
        try:
            return await self._serve(request, record)
        except HttpError as exc:
            record.status, record.error = exc.status, exc.message
            log.info("refused %s %s: %s %s", request.method, request.path, exc.status, exc.message)
            return web.json_response(error_body(exc.status, exc.message), status=exc.status)
        finally:
            record.finished = True

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object")
        return body

    def _resolve_model(self, body: dict[str, Any]) -> tuple[str, str | None]:
        """(the model name to answer as, the LoRA adapter if the name is one)."""
        model = body.get("model")
        if model is None or model == "":
            return self.config.names[0], None
        if not isinstance(model, str):
            raise HttpError(400, "'model' must be a string")
        if model in self.config.names:
            return model, None
        if model in self.loras:
            return model, model
        raise HttpError(404, f"The model `{model}` does not exist.")

    async def _serve(self, request: web.Request, record: RequestRecord) -> web.StreamResponse:
        body = self._parse(await request.read())
        record.body = body
        model, lora = self._resolve_model(body)
        record.model, record.lora = model, lora
        try:
            prompt = prompt_text(request.path, body)
            budget = output_token_budget(body, self.config.default_output_tokens)
            pd = classify(self.config, body, prompt)
        except BadRequest as exc:
            raise HttpError(400, str(exc)) from exc
        record.role = pd.role.value
        record.kv_transfer_params = pd.kv_transfer_params
        record.bootstrap_room, record.bootstrap_host = pd.bootstrap_room, pd.bootstrap_host
        record.prompt_hash = prompt_hash(prompt)
        record.prompt_tokens = count_tokens(prompt)
        if record.prompt_tokens + budget > self.config.max_model_len:
            raise HttpError(
                400,
                f"This model's maximum context length is {self.config.max_model_len} tokens. However, you "
                f"requested {record.prompt_tokens + budget} tokens ({record.prompt_tokens} in the messages, "
                f"{budget} in the completion). Please reduce the length of the messages or completion.",
            )
        stream = body.get("stream") is True
        record.stream = stream
        if self.fault.remaining > 0 and self.fault.status is not None:
            self.fault.remaining -= 1
            raise HttpError(self.fault.status, "injected failure (POST /mock/config)")

        chat = request.path.endswith("chat/completions")
        completion = Completion(
            id=("chatcmpl-" if chat else "cmpl-") + record.id,
            created=int(record.time),
            model=model,
            chat=chat,
        )
        headers = {"x-mock-engine": self.config.engine_id}
        if "x-request-id" in record.headers:
            headers["x-request-id"] = record.headers["x-request-id"]
        options = body.get("stream_options")
        job = Job(
            record=record,
            pd=pd,
            completion=completion,
            prompt=prompt,
            tokens=answer_tokens(
                model, prompt, budget, mode=self.config.mode, engine_id=self.config.engine_id
            ),
            finish_reason="length" if ("max_tokens" in body or "max_completion_tokens" in body) else "stop",
            headers=headers,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
            prompt_ids=token_ids(prompt) if self.sim is not None else None,
        )
        return await (self._stream(request, job) if stream else self._complete(job))

    async def _admit(self, record: RequestRecord) -> None:
        """Wait for a batch slot (counted as waiting), then count as running."""
        self.load.waiting += 1
        if record.lora:
            self.load.waiting_loras[record.lora] = self.load.waiting_loras.get(record.lora, 0) + 1
        try:
            await self._slots.acquire()
        finally:
            self.load.waiting -= 1
            if record.lora:
                self.load.waiting_loras[record.lora] -= 1
        self.load.running[record.id] = record.prompt_tokens
        if record.lora:
            self.load.running_loras[record.id] = record.lora

    def _release(self, record: RequestRecord) -> None:
        if self.load.running.pop(record.id, None) is not None:
            self._slots.release()
        self.load.running_loras.pop(record.id, None)

    def _first_token_delay(self, job: Job) -> float:
        delay = self.config.ttft + self.config.prefill_per_token * job.record.prompt_tokens
        if job.pd.role is Role.DECODE:
            delay += self.config.kv_transfer_latency
        return delay

    async def _generate(self, job: Job) -> AsyncIterator[str]:
        """Yield tokens with the configured delays, updating load and metrics."""
        record = job.record
        start = time.monotonic()
        if (delay := self._first_token_delay(job)) > 0:
            await asyncio.sleep(delay)
        last = time.monotonic()
        self.metrics.observe_first_token(last - start)
        for i, token in enumerate(job.tokens):
            if i:
                if self.config.itl > 0:  # with no delay, tokens come as fast as the loop takes them
                    await asyncio.sleep(self.config.itl)
                now = time.monotonic()
                self.metrics.observe_inter_token(now - last)
                last = now
            record.output_tokens += 1
            self.load.running[record.id] = record.prompt_tokens + record.output_tokens
            yield token

    async def _simulate(self, job: Job) -> AsyncIterator[str]:
        """Tokens as the simulator's steps produce them (it counts running and waiting itself)."""
        assert self.sim is not None
        sim = self.sim
        decode = job.pd.role is Role.DECODE
        if decode and self.config.kv_transfer_latency > 0:
            await asyncio.sleep(self.config.kv_transfer_latency * sim.time_scale)
        lora = job.record.lora
        req = sim.request(
            job.record.id, job.prompt_ids or [], len(job.tokens), precomputed=decode, lora=lora,
            lora_id=self.lora_ids.get(lora) if lora is not None else None,
        )  # fmt: skip
        sim.submit(req)
        try:
            last = req.arrival
            while (index := await req.tokens.get()) != END:
                now = req.token_times[index]
                if index == 0:
                    self.metrics.observe_first_token(now - req.arrival)
                else:
                    self.metrics.observe_inter_token(now - last)
                last = now
                job.record.output_tokens += 1
                yield job.tokens[index]
        finally:
            sim.cancel(req)

    async def _answer_tokens(self, job: Job) -> AsyncGenerator[str]:
        """The simulator's tokens, or the fixed-delay ones between admission and release."""
        if self.sim is not None:
            async for token in self._simulate(job):
                yield token
            return
        try:
            async for token in self._generate(job):
                yield token
        finally:
            self._release(job.record)

    def _finished(self, job: Job, started: float) -> None:
        scale = self.sim.time_scale if self.sim is not None else 1.0
        self.metrics.observe_finished(
            (time.monotonic() - started) / scale, job.record.prompt_tokens, len(job.tokens), job.finish_reason
        )

    async def _complete(self, job: Job) -> web.StreamResponse:
        started = time.monotonic()
        if self.sim is None:
            await self._admit(job.record)
        async with contextlib.aclosing(self._answer_tokens(job)) as tokens:
            text = "".join([t async for t in tokens])
        extra: dict[str, Any] = {}
        if job.pd.role is Role.PREFILL:
            params = prefill_transfer_params(
                self.config, job.prompt, self._advertised_host(), self.port, job.record.id
            )
            if params is not None:
                extra["kv_transfer_params"] = params
        self._finished(job, started)
        job.record.status = 200
        return web.json_response(
            job.completion.body(text, job.finish_reason, job.usage(), extra), headers=job.headers
        )

    async def _stream(self, request: web.Request, job: Job) -> web.StreamResponse:
        started = time.monotonic()
        completion = job.completion
        response = web.StreamResponse(
            status=200,
            headers={**job.headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        job.record.status = 200
        if self.sim is None:
            await self._admit(job.record)
        try:
            await response.prepare(request)
            first = True
            async with contextlib.aclosing(self._answer_tokens(job)) as tokens:
                async for token in tokens:
                    await response.write(sse(completion.chunk(token, first=first)))
                    first = False
            await response.write(sse(completion.chunk(None if completion.chat else "", job.finish_reason)))
            if job.include_usage:
                await response.write(sse(completion.usage_chunk(job.usage())))
            await response.write(sse("[DONE]"))
            await response.write_eof()
        except ConnectionResetError:  # the client hung up: stop generating, nothing left to answer
            job.record.error = "client disconnected"
            return response
        except asyncio.CancelledError:
            job.record.error = "client disconnected"
            raise
        finally:
            self._release(job.record)
        self._finished(job, started)
        return response

    # ------------------------------------------------------------------ models and LoRA
    async def _models(self, _: web.Request) -> web.Response:
        created = int(self.started)
        data: list[dict[str, Any]] = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": self.config.model,
                "parent": None,
                "max_model_len": self.config.max_model_len,
                "permission": [],
            }
            for name in self.config.names
        ]
        data += [
            {
                "id": lora.name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": lora.path,
                "parent": lora.base_model_name or self.config.names[0],
                "max_model_len": None,
                "permission": [],
            }
            for lora in self.loras.values()
        ]
        return web.json_response({"object": "list", "data": data})

    async def _lora_body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = self._parse(await request.read())
        except HttpError as exc:
            raise web.HTTPBadRequest(text=exc.message) from exc
        name = body.get("lora_name")
        if not isinstance(name, str) or not name:
            raise web.HTTPBadRequest(text="'lora_name' is required")
        return body

    async def _load_lora(self, request: web.Request) -> web.Response:
        body = await self._lora_body(request)
        name = body["lora_name"]
        path = body.get("lora_path") or body.get("source") or name
        if name in self.loras:
            return web.json_response(
                error_body(400, f"The lora adapter '{name}' has already been loaded."), status=400
            )
        self.loras[name] = LoraModule(name, str(path), body.get("base_model_name"))
        self._last_lora_id += 1
        self.lora_ids[name] = self._last_lora_id
        self.config.enable_lora = True
        log.info("loaded LoRA adapter %s from %s", name, path)
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def _unload_lora(self, request: web.Request) -> web.Response:
        body = await self._lora_body(request)
        name = body["lora_name"]
        self.lora_ids.pop(name, None)
        if self.loras.pop(name, None) is None:
            message = f"The lora adapter '{name}' cannot be found."
            return web.json_response(error_body(404, message), status=404)
        log.info("unloaded LoRA adapter %s", name)
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def _tokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/tokenize``: ``{"prompt"}`` or ``{"messages"}`` → ``{count, max_model_len, tokens}``."""
        try:
            body = self._parse(await request.read())
            self._resolve_model(body)
            path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
            tokens = token_ids(prompt_text(path, body))
        except HttpError as exc:
            return web.json_response(error_body(exc.status, exc.message), status=exc.status)
        except BadRequest as exc:
            return web.json_response(error_body(400, str(exc)), status=400)
        return web.json_response(
            {"count": len(tokens), "max_model_len": self.config.max_model_len, "tokens": tokens}
        )

    async def _reset_prefix_cache(self, _: web.Request) -> web.Response:
        """vLLM's ``POST /reset_prefix_cache`` (simulator only; refused while requests hold blocks)."""
        if self.sim is None:
            return web.Response(status=200)
        if not self.sim.pool.reset():
            message = "Failed to reset prefix cache: some blocks are still in use"
            return web.json_response(error_body(409, message), status=409)
        self._publish(self.sim.pool.take_events())
        return web.Response(status=200)

    # ------------------------------------------------------------------ probes and metrics
    async def _health(self, request: web.Request) -> web.Response:
        challenge = request.headers.get(CHALLENGE_HEADER)
        if challenge and (token := self.config.identity_token):
            return web.Response(status=200, headers={PROOF_HEADER: proof(token, challenge)})
        return web.Response(status=200)

    async def _version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": "ferry-mock-engine"})

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _runtime_metrics(self, _: web.Request) -> web.Response:
        body = self.metrics.runtime_exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ------------------------------------------------------------------ inspection
    async def _list_requests(self, request: web.Request) -> web.Response:
        """All records, or those whose ``path``/``model``/``role`` equal the query parameters."""
        wanted = {k: v for k, v in request.query.items() if k in {"path", "model", "role"}}
        records = [r for r in self.log.all() if all(getattr(r, k) == v for k, v in wanted.items())]
        return web.json_response([r.to_json() for r in records])

    async def _clear_requests(self, _: web.Request) -> web.Response:
        self.log.clear()
        return web.Response(status=204)

    def info(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "engine_id": cfg.engine_id,
            "engine": cfg.engine.value,
            "model": cfg.model,
            "served_model_names": cfg.names,
            "loras": sorted(self.loras),
            "role": cfg.role.value,
            "connector": cfg.connector.value,
            "host": cfg.host,
            "port": self.port,
            "url": self.url,
            "ttft": cfg.ttft,
            "itl": cfg.itl,
            "max_num_seqs": cfg.max_num_seqs,
            "running": len(self.sim.running) if self.sim else len(self.load.running),
            "waiting": len(self.sim.waiting) if self.sim else self.load.waiting,
            "profile": cfg.profile,
            "time_scale": cfg.time_scale,
            "ignored_flags": cfg.ignored_flags,
        }

    async def _info(self, _: web.Request) -> web.Response:
        return web.json_response(self.info())

    async def _set_config(self, request: web.Request) -> web.Response:
        try:
            body = self._parse(await request.read())
            for key in ("ttft", "itl"):
                if key in body:
                    value = body[key]
                    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                        raise HttpError(400, f"'{key}' must be a non-negative number of seconds")
                    setattr(self.config, key, float(value))
            if "fail_status" in body:
                status = body["fail_status"]
                if status is not None and (not isinstance(status, int) or not 400 <= status <= 599):
                    raise HttpError(400, "'fail_status' must be null or an HTTP error status (400..599)")
                self.fault.status = status
                self.fault.remaining = int(body.get("fail_count", 1 if status is not None else 0))
        except HttpError as exc:
            return web.json_response(error_body(exc.status, exc.message), status=exc.status)
        return web.json_response(self.info())
