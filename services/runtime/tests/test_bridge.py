"""The runtime sidecar's translation of vLLM KV events into Ferry's routing hashes."""

from __future__ import annotations

from typing import Any

import msgpack
import orjson
import pytest
from ferry_local.readiness import free_port
from ferry_mock_engine.kv_events import BlockStored, KVEventsConfig, ZmqPublisher, encode_batch
from ferry_runtime.blocks import BlockTranslator, unknown_adapter
from ferry_runtime.kv_bridge import REPLAYED, KvEventBridge
from ferry_runtime.lora_names import LoraNames, listed_adapters
from ferry_runtime.settings import parse_settings
from ferry_runtime.vllm_events import BadBatch, Cleared, Removed, Stored, decode_batch
from ferry_schemas.kv import KvBlockEvents, kv_subject, lora_root, token_block_hashes

TOKENS = list(range(100, 164))  # 4 blocks of 16


def test_array_like_and_map_batches_decode_alike() -> None:
    array_like = msgpack.packb(
        [1.5, [["BlockStored", [11, 12], None, TOKENS[:32], 16, None, "GPU"], ["BlockRemoved", [11], "GPU"],
               ["AllBlocksCleared"]], 0]
    )  # fmt: skip
    as_map = msgpack.packb(
        {"ts": 1.5, "events": [
            {"type": "BlockStored", "block_hashes": [11, 12], "parent_block_hash": None,
             "token_ids": TOKENS[:32], "block_size": 16, "lora_id": None, "medium": "GPU"},
            {"type": "BlockRemoved", "block_hashes": [11], "medium": "GPU"},
            {"type": "AllBlocksCleared"},
        ], "data_parallel_rank": 0}
    )  # fmt: skip
    expected = [Stored([11, 12], None, TOKENS[:32], 16), Removed([11]), Cleared()]
    assert decode_batch(array_like) == (1.5, expected)
    assert decode_batch(as_map) == (1.5, expected)
    assert decode_batch(msgpack.packb([0.0, [["BlockStored", [b"\x01\x02"], None, TOKENS[:16], 16]]]))[1] == [
        Stored([258], None, TOKENS[:16], 16)
    ]
    for bad in (b"\xc1", msgpack.packb("x"), msgpack.packb([0.0, [["BlockStored", ["h"], None, [], 16]]])):
        with pytest.raises(BadBatch):
            decode_batch(bad)


def test_engine_hashes_become_token_chained_hashes_and_removals_follow() -> None:
    blocks = BlockTranslator()
    ferry = token_block_hashes(TOKENS, 16)
    first = blocks.apply([Stored([901, 902], None, TOKENS[:32], 16)])
    second = blocks.apply([Stored([903, 904], 902, TOKENS[32:], 16)])  # chained from engine hash 902
    assert first.stored == ferry[:2]
    assert second.stored == ferry[2:]
    assert blocks.snapshot() == sorted(ferry)
    gone = blocks.apply([Removed([904, 999])])  # 999 was never stored: ignored
    assert gone.removed == [ferry[3]]
    # Evicted and stored again in one batch: no net change is reported.
    assert not blocks.apply([Removed([903]), Stored([905], 902, TOKENS[32:48], 16)])
    cleared = blocks.apply([Cleared(), Stored([906], None, TOKENS[:16], 16)])
    assert cleared.cleared
    assert cleared.stored == ferry[:1]
    assert blocks.snapshot() == [ferry[0]]


def test_a_block_whose_parent_was_never_seen_is_skipped() -> None:
    blocks = BlockTranslator()
    change = blocks.apply([Stored([7], 6, TOKENS[:16], 16)])
    assert not change
    assert change.skipped == 1


def test_settings_read_kthenas_runtime_flags() -> None:
    argv = [
        "--port", "8900", "--engine", "vllm", "--engine-base-url", "http://localhost:8000",
        "--engine-metrics-path", "/metrics", "--pod", "web-0.a.b.team", "--model", "Qwen/Qwen3-0.6B",
    ]  # fmt: skip
    settings = parse_settings(argv, env={"FERRY_NATS_URL": "nats://n:4222"})
    assert (settings.pod, settings.namespace, settings.model) == ("web-0.a.b", "team", "Qwen/Qwen3-0.6B")
    assert settings.kv_events_endpoint == "tcp://localhost:5557"
    assert settings.nats_url == "nats://n:4222"
    with pytest.raises(ValueError, match="pod name"):
        parse_settings(["--model", "m", "--pod", "$(POD_NAME).$(NAMESPACE)"], env={})


def test_messages_carry_the_pod_subject_and_snapshots() -> None:
    settings = parse_settings(["--pod", "p-0.ns", "--model", "org/m.1"], env={})
    bridge = KvEventBridge(settings, js=None)  # type: ignore[arg-type]
    payload = msgpack.packb([0.0, [["BlockStored", [1, 2], None, TOKENS[:32], 16, None, "GPU"]], 0])
    change = bridge.handle([b"", (0).to_bytes(8, "big"), payload])
    assert change is not None
    message = bridge.message(change)
    assert message.subject == kv_subject("ns", "org/m.1", "p-0") == "ferry.kv.ns.org/m_1.p-0"
    assert (message.seq, message.snapshot, message.stored) == (1, False, token_block_hashes(TOKENS[:32], 16))
    snapshot = bridge.message(None)
    assert (snapshot.seq, snapshot.snapshot, snapshot.block_size) == (2, True, 16)
    assert snapshot.stored == sorted(message.stored)


class Recorder:
    """The bus side of the bridge (this test is about the engine side)."""

    def __init__(self) -> None:
        self.messages: list[KvBlockEvents] = []

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> Any:
        self.messages.append(KvBlockEvents.model_validate_json(data))


def engine_batches(buffer_steps: int) -> tuple[ZmqPublisher, str, list[list[bytes]], list[int]]:
    """The simulator's vLLM publisher after 5 batches (one block each, chained to the one before):
    it, its replay address, the frames it sent and the blocks' Ferry hashes."""
    replay_port = free_port()
    config = KVEventsConfig(
        enable=True, publisher="zmq", endpoint=f"tcp://*:{free_port()}",
        replay_endpoint=f"tcp://*:{replay_port}", topic="kv", buffer_steps=buffer_steps,
    )  # fmt: skip
    publisher = ZmqPublisher(config, "127.0.0.1")
    tokens = list(range(100, 180))
    frames = []
    for i in range(5):
        events = [BlockStored([900 + i], 899 + i if i else None, tokens[16 * i : 16 * (i + 1)], 16)]
        publisher.publish(events)
        frames.append([b"kv", i.to_bytes(8, "big"), encode_batch(events)])
    return publisher, f"tcp://127.0.0.1:{replay_port}", frames, token_block_hashes(tokens, 16)


def replaying_bridge(replay: str) -> tuple[KvEventBridge, Recorder]:
    settings = parse_settings(
        ["--pod", "p-0.ns", "--model", "m", "--kv-events-replay-endpoint", replay], env={}
    )
    recorder = Recorder()
    return KvEventBridge(settings, js=recorder), recorder  # type: ignore[arg-type]


async def test_missed_batches_are_replayed_from_the_engines_replay_socket() -> None:
    """A sidecar that subscribed late, and later missed two batches, asks the engine's replay socket
    for them and chains every block."""
    publisher, replay, frames, ferry = engine_batches(buffer_steps=10_000)
    bridge, recorder = replaying_bridge(replay)
    replayed = REPLAYED._value.get()
    try:
        await bridge.receive(frames[1])  # batch 0 was sent before the sidecar subscribed
        assert bridge.blocks.snapshot() == sorted(ferry[:2])
        await bridge.receive(frames[4])  # batches 2 and 3 were missed
        assert bridge.blocks.snapshot() == sorted(ferry)
        assert [m.stored for m in recorder.messages] == [[h] for h in ferry]  # in the engine's order
        assert [m.seq for m in recorder.messages] == [1, 2, 3, 4, 5]
        assert REPLAYED._value.get() == replayed + 3
    finally:
        publisher.close()


async def test_batches_the_engine_no_longer_buffers_stay_missed() -> None:
    publisher, replay, frames, _ = engine_batches(buffer_steps=3)  # keeps batches 2, 3, 4
    bridge, _ = replaying_bridge(replay)
    try:
        # Batch 2 is replayed, but its parent (batch 1) is gone: neither it nor batch 3 can be chained.
        await bridge.receive(frames[3])
        assert bridge.blocks.snapshot() == []
        assert bridge.message(None).stored == []
    finally:
        publisher.close()


def test_an_adapters_blocks_are_kept_apart_from_the_base_models() -> None:
    """Rooted at the adapter's name: the id (3 here) is only this engine's load counter."""
    batch = msgpack.packb(
        [0.0, [["BlockStored", [1], None, TOKENS[:16], 16, None, "GPU"],
               ["BlockStored", [2], None, TOKENS[:16], 16, 3, "GPU"],
               ["BlockStored", [4], 2, TOKENS[16:32], 16, 3, "GPU"]], 0]
    )  # fmt: skip
    _, events = decode_batch(batch)
    assert [e.lora_id for e in events if isinstance(e, Stored)] == [None, 3, 3]
    names = LoraNames()
    names.observe(["tone", "legal", "sql"])  # loaded in this order: ids 1, 2, 3
    blocks = BlockTranslator(names.name)
    change = blocks.apply(events)
    base = token_block_hashes(TOKENS[:16], 16)
    adapter = token_block_hashes(TOKENS[:32], 16, parent=lora_root("sql"))
    assert sorted(change.stored) == sorted(base + adapter)
    assert not set(base) & set(adapter)  # a base-model prompt does not match the adapter's KV


def test_recent_vllm_names_the_adapter_in_the_event() -> None:
    as_map = msgpack.packb(
        {"ts": 0.0, "events": [
            {"type": "BlockStored", "block_hashes": [5], "parent_block_hash": None, "token_ids": TOKENS[:16],
             "block_size": 16, "lora_id": 7, "medium": "GPU", "lora_name": "sql", "extra_keys": [["sql"]]},
        ]}
    )  # fmt: skip
    array_like = msgpack.packb([0.0, [["BlockStored", [5], None, TOKENS[:16], 16, 7, "GPU", "sql"]]])
    for payload in (as_map, array_like):
        _, events = decode_batch(payload)
        assert events == [Stored([5], None, TOKENS[:16], 16, 7, "sql")]
        assert not unknown_adapter(events, LoraNames().name)  # no /v1/models read needed
        change = BlockTranslator().apply(events)
        assert change.stored == token_block_hashes(TOKENS[:16], 16, parent=lora_root("sql"))


def test_adapter_ids_follow_vllms_load_counter() -> None:
    """vLLM numbers adapters as it loads them and never reuses an id after an unload."""
    models = {"data": [{"id": "base"}, {"id": "a", "parent": "base"}, {"id": "b", "parent": "base"}]}
    assert listed_adapters(orjson.dumps(models)) == ["a", "b"]
    names = LoraNames()
    names.observe(["a", "b"])
    assert (names.name(1), names.name(2)) == ("a", "b")
    names.observe(["b"])  # a unloaded
    names.observe(["b", "c", "a"])  # c loaded, then a again
    assert (names.name(1), names.name(2), names.name(3), names.name(4)) == (None, "b", "c", "a")
    unnamed = [Stored([9], None, TOKENS[:16], 16, 5)]
    assert unknown_adapter(unnamed, names.name)
    change = BlockTranslator(names.name).apply(unnamed)
    assert (change.stored, change.skipped) == ([], 1)  # not guessed: skipped until it is known
