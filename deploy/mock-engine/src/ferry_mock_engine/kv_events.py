"""KV-cache events in vLLM's wire format (``vllm/distributed/kv_events.py``).

vLLM publishes, per engine step, a ``KVEventBatch`` on a ZMQ PUB socket as three frames:
``topic``, an 8-byte big-endian sequence number and a msgpack payload. With ``msgspec``'s
``array_like=True, tag=True`` structs (the format vLLM's example subscriber and llm-d decode) a
batch is ``[ts, [event, ...], data_parallel_rank]`` and each event an array starting with its tag:

* ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium]``
* ``["BlockRemoved", block_hashes, medium]``
* ``["AllBlocksCleared"]``

``--kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
"endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558", "topic": "kv-events"}'`` configures it,
as in vLLM. With a ``replay_endpoint`` the last ``buffer_steps`` batches are kept and served on a
ROUTER socket: a consumer that missed batches sends ``[b"", start_seq (8 bytes, big-endian)]`` and
gets ``[b"", seq, payload]`` for every kept batch from ``start_seq`` on, then ``[b"", -1, b""]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

MEDIUM_GPU = "GPU"
END_SEQ = (-1).to_bytes(8, "big", signed=True)  # the end of a replay


@dataclass(frozen=True, slots=True)
class BlockStored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = MEDIUM_GPU

    def wire(self) -> list[Any]:
        return [
            "BlockStored", self.block_hashes, self.parent_block_hash, self.token_ids,
            self.block_size, self.lora_id, self.medium,
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class BlockRemoved:
    block_hashes: list[int]
    medium: str | None = MEDIUM_GPU

    def wire(self) -> list[Any]:
        return ["BlockRemoved", self.block_hashes, self.medium]


@dataclass(frozen=True, slots=True)
class AllBlocksCleared:
    def wire(self) -> list[Any]:
        return ["AllBlocksCleared"]


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


def encode_batch(events: list[KVEvent], ts: float | None = None, dp_rank: int = 0) -> bytes:
    """One ``KVEventBatch`` as msgpack bytes."""
    return bytes(msgpack.packb([time.time() if ts is None else ts, [e.wire() for e in events], dp_rank]))


@dataclass(frozen=True)
class KVEventsConfig:
    """vLLM's ``--kv-events-config`` (only the zmq publisher is modelled)."""

    enable: bool = False
    publisher: str = "null"
    endpoint: str = "tcp://*:5557"
    replay_endpoint: str | None = None
    topic: str = ""
    buffer_steps: int = 10_000

    @classmethod
    def parse(cls, text: str) -> KVEventsConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--kv-events-config is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("--kv-events-config must be a JSON object")
        enable = bool(data.get("enable_kv_cache_events", False))
        publisher = str(data.get("publisher") or ("zmq" if enable else "null"))
        if publisher not in {"zmq", "null"}:
            raise ValueError(f"--kv-events-config publisher {publisher!r} is not zmq or null")
        return cls(
            enable=enable and publisher == "zmq",
            publisher=publisher,
            endpoint=str(data.get("endpoint") or cls.endpoint),
            replay_endpoint=data.get("replay_endpoint") or None,
            topic=str(data.get("topic") or ""),
            buffer_steps=int(data.get("buffer_steps") or cls.buffer_steps),
        )


def bind_address(endpoint: str, host: str) -> str:
    """vLLM binds ``tcp://*:port``; on the local node every pod shares the host, so bind the pod's
    own address instead of every address when the engine was given one."""
    if host not in {"", "0.0.0.0", "::"} and endpoint.startswith("tcp://*:"):
        return f"tcp://{host}:{endpoint.rsplit(':', 1)[1]}"
    return endpoint


class ZmqPublisher:
    """vLLM's ``ZmqEventPublisher`` frames, sent from the event loop (a PUB send never blocks), and its
    replay socket when the config names one (served by a task of the running loop)."""

    def __init__(self, config: KVEventsConfig, host: str) -> None:
        self.config = config
        self.endpoint = bind_address(config.endpoint, host)
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.set_hwm(100_000)
        original = config.endpoint  # vLLM's rule: bind a wildcard/ipc/inproc address, else connect
        if "*" in original or "::" in original or original.startswith(("ipc://", "inproc://")):
            self._pub.bind(self.endpoint)
        else:
            self._pub.connect(self.endpoint)
        self._topic = config.topic.encode()
        self.seq = 0
        self.buffer: deque[tuple[int, bytes]] = deque(maxlen=max(1, config.buffer_steps))
        self._replay: zmq.asyncio.Socket | None = None
        self._replay_task: asyncio.Task[None] | None = None
        if config.replay_endpoint:
            self._replay = zmq.asyncio.Context.instance().socket(zmq.ROUTER)
            self._replay.bind(bind_address(config.replay_endpoint, host))
            self._replay_task = asyncio.get_running_loop().create_task(self._serve_replay(self._replay))
        log.info(
            "publishing KV events on %s (topic %r, replay %s)", self.endpoint, config.topic,
            config.replay_endpoint or "off",
        )  # fmt: skip

    def publish(self, events: list[KVEvent]) -> None:
        if not events:
            return
        payload = encode_batch(events)
        seq = self.seq
        self.seq += 1
        if self._replay is not None:
            self.buffer.append((seq, payload))
        try:
            self._pub.send_multipart((self._topic, seq.to_bytes(8, "big"), payload), flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("KV event batch %d dropped: the PUB queue is full", seq)

    async def _serve_replay(self, socket: zmq.asyncio.Socket) -> None:
        while True:
            frames = await socket.recv_multipart()
            if len(frames) != 3:
                log.warning("ignoring a replay request of %d frames", len(frames))
                continue
            client, _, start = frames
            first = int.from_bytes(start, "big")
            for seq, payload in list(self.buffer):
                if seq >= first:
                    await socket.send_multipart((client, b"", seq.to_bytes(8, "big"), payload))
            await socket.send_multipart((client, b"", END_SEQ, b""))

    def close(self) -> None:
        if self._replay_task is not None:
            self._replay_task.cancel()
            self._replay_task = None
        if self._replay is not None:
            with contextlib.suppress(zmq.ZMQError):
                self._replay.close(linger=0)
            self._replay = None
        self._pub.close(linger=0)
