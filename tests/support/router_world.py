"""The router's integration world: real engines, a real router process and the bus they share.

One place for what every router integration module starts: :class:`World` (the processes and the
NATS connection), :class:`Engine` (a ``ferry-mock-engine``), :class:`RouterProcess`, and builders
for the Pod/ModelServer/ModelRoute objects published on the bus. The module-scoped ``world`` /
``bus`` / ``router`` fixtures over them live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from ferry_local.processes import ManagedProcess, spawn, tail
from ferry_local.readiness import free_port, free_port_run
from ferry_schemas.bus import MSG_ID_HEADER, ObjectEvent

_SUBNET = random.randint(20, 240)
_NEXT_HOST = iter(range(2, 250))


def next_ip() -> str:
    return f"127.0.{_SUBNET}.{next(_NEXT_HOST)}"


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return int(response.status) == 200


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def wait_until(check: Any, what: str, timeout: float = 30.0, logs: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{logs() if logs else ''}")


@dataclass
class Engine:
    """One ``ferry-mock-engine`` process."""

    name: str
    host: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests(self) -> list[dict[str, Any]]:
        return [r for r in http_json(f"{self.url}/mock/requests") if r["path"].startswith("/v1/")]

    def wait_up(self) -> None:
        wait_until(lambda: http_ok(f"{self.url}/health"), f"engine {self.name}", logs=self.log)

    def log(self) -> str:
        return tail(self.process.log)


@dataclass
class RouterProcess:
    port: int
    metrics_port: int
    debug_port: int
    access_log: Path
    trace_file: Path
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def log(self) -> str:
        return tail(self.process.log, 60)

    def server(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return http_json(
                f"http://127.0.0.1:{self.debug_port}/debug/config_dump/namespaces/{namespace}/modelservers/{name}"
            )
        except OSError:
            return None

    def wait_endpoints(self, namespace: str, name: str, count: int, key: str = "associatedPods") -> None:
        def check() -> bool:
            dump = self.server(namespace, name)
            return dump is not None and len(dump[key]) == count

        wait_until(check, f"{namespace}/{name} with {count} {key}", logs=self.log)

    def wait_model(self, name: str) -> None:
        def listed() -> bool:
            return name in {m["id"] for m in http_json(f"{self.url}/v1/models")["data"]}

        wait_until(listed, f"model {name} routable", logs=self.log)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0, timeout=30)


@dataclass
class World:
    """Processes started for the module, and the bus they share."""

    nats_url: str
    log_dir: Path
    js: Any = None
    nc: Any = None
    processes: list[ManagedProcess] = field(default_factory=list)

    def engine(self, name: str, served: str, port: int, *extra: str, host: str | None = None) -> Engine:
        host = host or next_ip()
        argv = [
            sys.executable, "-m", "ferry_mock_engine", "--host", host, "--port", str(port),
            "--served-model-name", served, "--mock-id", name, *extra,
        ]  # fmt: skip
        engine = Engine(name, host, port, spawn(f"engine-{name}", argv, self.log_dir))
        self.processes.append(engine.process)
        return engine

    def router(self, *, name: str = "router", env: dict[str, str] | None = None) -> RouterProcess:
        port, debug_port = free_port(), free_port()
        # worker i of FERRY_ROUTER_WORKERS takes metrics_port + i: keep the run clear of the others
        metrics_port = free_port_run(4, avoid={port, debug_port})
        access_log = self.log_dir / f"{name}-access.log"
        trace_file = self.log_dir / f"{name}-spans.jsonl"
        settings = {
            "FERRY_NATS_URL": self.nats_url,
            "FERRY_ROUTER_PORT": str(port),
            "FERRY_ROUTER_METRICS_PORT": str(metrics_port),
            "FERRY_ROUTER_DEBUG_PORT": str(debug_port),
            "METRICS_SCRAPE_INTERVAL": "200ms",
            "ACCESS_LOG_FORMAT": "json",
            "ACCESS_LOG_OUTPUT": str(access_log),
            "FERRY_TRACE_FILE": str(trace_file),
            "FERRY_ROUTER_CONFIG": "",
            "FERRY_ROUTER_DRAIN_PERIOD": "0s",
            **(env or {}),
        }
        argv = [sys.executable, "-c", "from ferry_router.__main__ import main; main()"]
        process = spawn(name, argv, self.log_dir, settings)
        self.processes.append(process)
        router = RouterProcess(port, metrics_port, debug_port, access_log, trace_file, process)
        wait_until(router.ready, f"{name} /readyz", timeout=60, logs=router.log)
        return router

    async def publish(self, resource: str, obj: dict[str, Any], event: str = "MODIFIED") -> None:
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(time.monotonic_ns())
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        evt = ObjectEvent.from_object(event, resource, obj)  # type: ignore[arg-type]
        await self.js.publish(evt.subject, evt.to_bytes(), headers={MSG_ID_HEADER: evt.msg_id})

    async def pod(
        self, namespace: str, name: str, labels: dict[str, str], ip: str, *, ready: bool = True
    ) -> None:
        await self.publish("pods", pod_object(namespace, name, labels, ip, ready=ready))


def pod_object(
    namespace: str, name: str, labels: dict[str, str], ip: str, *, ready: bool = True
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "uid": f"uid-{namespace}-{name}",
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def model_server(namespace: str, name: str, labels: dict[str, str], port: int, **spec: Any) -> dict[str, Any]:
    selector: dict[str, Any] = {"matchLabels": labels}
    if "pdGroup" in spec:
        selector["pdGroup"] = spec.pop("pdGroup")
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelServer",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "workloadSelector": selector,
            "workloadPort": {"port": port},
            "inferenceEngine": "vLLM",
            **spec,
        },
    }


def model_route(namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A ModelRoute whose routable names (``modelName``, ``loraAdapters``) carry ``namespace``.

    Those names are global across namespaces, and the session's bus keeps every module's objects
    (nothing deletes them): a later module's router reads an earlier module's routes too, and for a
    name they share the oldest route wins -- with engines that module has already stopped."""
    shared = [n for n in (spec.get("modelName"), *spec.get("loraAdapters", ())) if n and namespace not in n]
    assert not shared, f"routable names {shared} must carry the test's namespace {namespace!r}"
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ns() -> str:
    return f"rt-{uuid.uuid4().hex[:8]}"


CHAT = [{"role": "user", "content": "Say hello to the router please"}]


def engine_latency(ttft: str, itl: str) -> tuple[str, ...]:
    """A mock engine's arguments for fixed first-token and inter-token latencies."""
    return ("--time-to-first-token", ttft, "--inter-token-latency", itl)


@dataclass
class Pool:
    """Engines behind one model of a router of their own (:func:`serve_pool`)."""

    router: RouterProcess
    namespace: str
    model: str
    engines: dict[str, Engine]  # by pod name

    def pod_of(self, answer: str) -> str:
        """The pod whose engine wrote ``answer`` (a mock engine signs it ``via <its name>``)."""
        return next(pod for pod, engine in self.engines.items() if f" via {engine.name} " in answer + " ")

    async def ask(
        self, text: str, *, system: str = "", max_tokens: int = 6, started: asyncio.Event | None = None
    ) -> str:
        """Stream one chat answer (after a system prompt, if given); the pod that gave it.
        ``started`` is set when its first chunk arrives."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": text})
        stream = await self.router.client().chat.completions.create(
            model=self.model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            stream=True,
        )
        parts: list[str] = []
        async for chunk in stream:
            if started is not None:
                started.set()
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
        return self.pod_of("".join(parts))

    def observed(self) -> dict[str, Any]:
        """The router's own latency measures per pod (its debug dump of each pod)."""
        base = f"http://127.0.0.1:{self.router.debug_port}/debug/config_dump/namespaces/{self.namespace}/pods"
        return {pod: http_json(f"{base}/{pod}")["observed"] for pod in self.engines}


async def serve_pool(
    bus: World, tmp_path: Path, config: str, engines: dict[str, Sequence[str]], served: str = "org/pool-model"
) -> Pool:
    """Engines (pod name -> the mock engine's extra arguments) behind one model of a router of their
    own, configured with the scheduler ``config`` (Kthena's router configuration YAML)."""
    namespace, port = f"pool-{uuid.uuid4().hex[:8]}", free_port()
    started = {
        name: bus.engine(f"{name}-{namespace}", served, port, *extra) for name, extra in engines.items()
    }
    for engine in started.values():
        engine.wait_up()
    config_file = tmp_path / f"router-{namespace}.yaml"
    config_file.write_text(config)
    router = bus.router(name=f"router-{namespace}", env={"FERRY_ROUTER_CONFIG": str(config_file)})
    await bus.publish("modelservers", model_server(namespace, "srv", {"app": namespace}, port, model=served))
    model = f"model-{namespace}"
    route = {"modelName": model, "rules": [{"targetModels": [{"modelServerName": "srv"}]}]}
    await bus.publish("modelroutes", model_route(namespace, "route", route))
    for name, engine in started.items():
        await bus.pod(namespace, name, {"app": namespace}, engine.host)
    router.wait_endpoints(namespace, "srv", len(started))
    router.wait_model(model)
    return Pool(router, namespace, model, started)
