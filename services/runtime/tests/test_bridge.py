"""The runtime sidecar's translation of vLLM KV events into Ferry's routing hashes."""

from __future__ import annotations

import msgpack
import pytest
from ferry_runtime.blocks import BlockTranslator
from ferry_runtime.kv_bridge import KvEventBridge
from ferry_runtime.settings import parse_settings
from ferry_runtime.vllm_events import BadBatch, Cleared, Removed, Stored, decode_batch
from ferry_schemas.kv import kv_subject, token_block_hashes

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
