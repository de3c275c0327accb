"""Sidecar settings: Kthena's runtime flags (so the converter's container works unchanged) plus Ferry's.

Kthena renders ``--port 8900 --engine vllm --engine-base-url http://localhost:8000
--engine-metrics-path /metrics --pod $(POD_NAME).$(NAMESPACE) --model <name>``; Ferry adds
``--kv-events-endpoint`` (default: the engine's host, port 5557, vLLM's default) and
``--kv-events-topic`` and ``--kv-events-replay-endpoint`` (vLLM's ``replay_endpoint``, e.g.
``tcp://<engine>:5558``; off by default: a missed batch is then only counted). ``FERRY_NATS_URL``
says where NATS is.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ferry_schemas.bus import KV_SNAPSHOT_SECONDS, LOAD_HEARTBEAT_SECONDS

VLLM_KV_EVENTS_PORT = 5557


@dataclass(frozen=True)
class RuntimeSettings:
    namespace: str
    pod: str
    model: str
    engine: str
    engine_base_url: str
    kv_events_endpoint: str
    kv_events_topic: str
    port: int
    host: str
    nats_url: str
    snapshot_interval: float = KV_SNAPSHOT_SECONDS
    kv_events_replay_endpoint: str | None = None
    replay_timeout: float = 2.0
    engine_metrics_path: str = "/metrics"
    load_interval: float = 1.0
    load_heartbeat: float = LOAD_HEARTBEAT_SECONDS
    models_interval: float = 10.0
    log_level: str = "INFO"
    service: str = "runtime"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ferry-runtime", description=__doc__)
    p.add_argument("--port", type=int, default=8900, help="probes and metrics (/health, /readyz, /metrics)")
    p.add_argument("--host", default=None, help="address of the probe listener (default 0.0.0.0)")
    p.add_argument("--engine", default="vllm")
    p.add_argument("--engine-base-url", default="http://localhost:8000")
    p.add_argument("--engine-metrics-path", default="/metrics")
    p.add_argument("--pod", default=None, help="<pod>.<namespace> (Kthena's form)")
    p.add_argument("--model", default=None)
    p.add_argument("--kv-events-endpoint", default=None)
    p.add_argument("--kv-events-topic", default="")
    p.add_argument("--kv-events-replay-endpoint", default=None, help="the engine's replay socket (vLLM)")
    p.add_argument("--snapshot-interval", type=float, default=KV_SNAPSHOT_SECONDS)
    p.add_argument("--nats-url", default=None)
    p.add_argument(
        "--load-interval", type=float, default=1.0, help="seconds between reads of the engine's load"
    )
    p.add_argument(
        "--load-heartbeat", type=float, default=LOAD_HEARTBEAT_SECONDS,
        help="publish the engine's load at least this often (seconds), changed or not",
    )  # fmt: skip
    p.add_argument("--models-interval", type=float, default=10.0, help="seconds between reads of /v1/models")
    return p


def parse_settings(argv: Sequence[str], env: Mapping[str, str] | None = None) -> RuntimeSettings:
    """Raises ``ValueError`` when the pod, namespace or model cannot be known."""
    env = os.environ if env is None else env
    ns, unknown = _parser().parse_known_args(list(argv))
    if unknown:
        raise ValueError(f"unknown arguments: {' '.join(unknown)}")
    pod, namespace = env.get("POD_NAME", ""), env.get("NAMESPACE", "") or env.get("POD_NAMESPACE", "")
    if ns.pod:
        if "." not in ns.pod:
            raise ValueError(f"--pod must be <pod>.<namespace>, got {ns.pod!r}")
        pod, namespace = ns.pod.rsplit(".", 1)  # a namespace is a DNS label: it has no dots
    model = ns.model or env.get("MODEL_NAME", "")
    for value, what in (
        (pod, "the pod name (--pod or POD_NAME)"),
        (namespace, "the namespace"),
        (model, "--model"),
    ):
        if not value or "$(" in value:
            raise ValueError(f"{what} is not set")
    endpoint = ns.kv_events_endpoint or env.get("FERRY_RUNTIME_KV_ENDPOINT")
    if not endpoint:
        host = urlsplit(ns.engine_base_url).hostname or "localhost"
        endpoint = f"tcp://{host}:{VLLM_KV_EVENTS_PORT}"
    for flag, seconds in (
        ("--snapshot-interval", ns.snapshot_interval),
        ("--load-interval", ns.load_interval),
        ("--load-heartbeat", ns.load_heartbeat),
        ("--models-interval", ns.models_interval),
    ):
        if seconds <= 0:
            raise ValueError(f"{flag} must be positive")
    path = ns.engine_metrics_path if ns.engine_metrics_path.startswith("/") else f"/{ns.engine_metrics_path}"
    return RuntimeSettings(
        namespace=namespace,
        pod=pod,
        model=model,
        engine=ns.engine.lower(),
        engine_base_url=ns.engine_base_url,
        kv_events_endpoint=endpoint,
        kv_events_topic=ns.kv_events_topic,
        port=ns.port,
        host=ns.host or env.get("FERRY_PROBE_HOST", "0.0.0.0"),
        nats_url=ns.nats_url or env.get("FERRY_NATS_URL") or env.get("NATS_URL") or "nats://127.0.0.1:4222",
        snapshot_interval=ns.snapshot_interval,
        kv_events_replay_endpoint=ns.kv_events_replay_endpoint
        or env.get("FERRY_RUNTIME_KV_REPLAY_ENDPOINT")
        or None,
        engine_metrics_path=path,
        load_interval=ns.load_interval,
        load_heartbeat=ns.load_heartbeat,
        models_interval=ns.models_interval,
        log_level=env.get("FERRY_LOG_LEVEL", "INFO"),
    )
