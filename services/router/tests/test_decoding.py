"""The router's hand-written decoders of bus messages: object events (the routing-table feed) and
engine load (the load reader). Each accepts what the publisher's pydantic model writes and refuses
what it would refuse, with a message naming the problem."""

from __future__ import annotations

import time

import pytest
from ferry_router.state.feed import decode_event
from ferry_router.state.load_reader import HEADER, BadMessage, LoadFeed, Reader, decode
from ferry_schemas.bus import ObjectEvent
from ferry_schemas.load import EngineLoad
from ferry_schemas.runtime.load_board import LOAD_MESSAGES

from .objects import pod


def test_an_object_event_as_the_watcher_writes_it() -> None:
    obj = pod("p0", {"app": "m"}, "127.0.0.2")
    event = ObjectEvent.from_object("ADDED", "pods", obj)
    assert decode_event(event.to_bytes()) == ("ADDED", "default/p0", obj)
    tombstone = ObjectEvent.from_object("DELETED", "pods", obj)
    assert decode_event(tombstone.to_bytes()) == ("DELETED", "default/p0", None)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"type": "CHANGED", "namespace": "a", "name": "b", "object": {}}', "type: 'CHANGED'"),
        (b'{"type": "ADDED", "namespace": 1, "name": "b", "object": {}}', "namespace and name"),
        (b'{"type": "ADDED", "namespace": "a", "name": "b", "object": []}', "object must be"),
        (b'{"type": "ADDED", "namespace": "a", "name": "b"}', "object must be"),
    ],
)
def test_a_bad_object_event_is_refused_with_the_reason(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_event(data)


def test_engine_load_as_the_sidecar_writes_it() -> None:
    load = EngineLoad(
        namespace="ns", pod="p0", model="m", epoch="e", seq=3, sent_at=1000.0, waiting=2.0, running=1.0,
        kv_cache_usage=0.5, ttft=0.1, tpot=0.02, models=["m", "lora"], base_models=["m"],
        series={"vllm:num_requests_waiting": 2.0},
    )  # fmt: skip
    # the sidecar read it 2 s ago by its clock: received 2 s before "now" on the monotonic clock
    decoded = decode(load.to_bytes(), wall=1002.0, monotonic=50.0)
    assert decoded == ("ns/p0", "e", 3, (48.0, 0.5, 2.0, 1.0, 0.1, 0.02), ["m", "lora"], ["m"])
    # a sender clock ahead of ours never makes the reading younger than now
    assert decode(load.to_bytes(), wall=990.0, monotonic=50.0)[3][0] == 50.0
    minimal = EngineLoad(namespace="ns", pod="p1", model="m", epoch="e", seq=1, sent_at=time.time())
    _, _, _, load, models, base = decode(minimal.to_bytes(), wall=time.time(), monotonic=1.0)
    assert (load[1:], models, base) == ((0.0, 0.0, 0.0, 0.0, 0.0), None, [])


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b'{"namespace": "ns", "pod": "p", "epoch": "e", "seq": 1}',  # no sentAt
        b'{"namespace": 1, "pod": "p", "epoch": "e", "seq": 1, "sentAt": 1}',
        b'{"namespace": "ns", "pod": "p", "epoch": "e", "seq": 1, "sentAt": 1, "waiting": "x"}',
        b'{"namespace": "ns", "pod": "p", "epoch": "e", "seq": 1, "sentAt": 1, "models": "m"}',
    ],
)
def test_bad_engine_load_is_refused(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode(data, wall=1.0, monotonic=1.0)


def test_reader_frames_carry_new_pods_changed_models_and_fixed_size_loads() -> None:
    """The reader's batch (one function pair: the child's flush, the router's frame parser)."""
    written: list[bytes] = []
    reader = Reader(written.append)

    def load(pod: str, seq: int, waiting: float, models: list[str] | None = None, epoch: str = "e") -> bytes:
        return EngineLoad(
            namespace="ns", pod=pod, model="m", epoch=epoch, seq=seq, sent_at=time.time(), waiting=waiting,
            models=models, base_models=models or [],
        ).to_bytes()  # fmt: skip

    reader.handle(load("a", 1, 1.0, ["m"]))
    reader.handle(load("b", 1, 2.0))
    reader.handle(load("a", 2, 3.0, ["m"]))  # newer: replaces the first
    reader.handle(load("a", 1, 9.0, ["m"]))  # older, same sidecar: dropped
    reader.handle(b"{")
    reader.flush()

    got: dict[str, list[object]] = {"loads": [], "models": []}

    class Sink:
        def loads(self, loads: list[tuple[str, float, float, float, float, float, float]]) -> None:
            got["loads"] += [(key, waiting) for key, _, _, waiting, *_ in loads]

        def models(self, key: str, models: list[str], base_models: list[str]) -> None:
            got["models"].append((key, models))

    feed = LoadFeed("nats://unused", stale_after=5.0)
    feed.sink = Sink()

    def apply(data: bytes) -> list[bytes]:
        kinds = []
        while data:
            kind, size = HEADER.unpack_from(data)
            feed.apply_frame(kind, data[HEADER.size : HEADER.size + size])
            kinds.append(kind)
            data = data[HEADER.size + size :]
        return kinds

    ok_before, bad_before = LOAD_MESSAGES.labels("ok")._value.get(), LOAD_MESSAGES.labels("bad")._value.get()
    assert apply(written.pop()) == [b"K", b"M", b"L", b"C"]
    assert got == {"loads": [("ns/a", 3.0), ("ns/b", 2.0)], "models": [("ns/a", ["m"])]}
    assert LOAD_MESSAGES.labels("ok")._value.get() - ok_before == 4
    assert LOAD_MESSAGES.labels("bad")._value.get() - bad_before == 1

    got = {"loads": [], "models": []}
    reader.handle(load("a", 3, 4.0, ["m"]))  # same models: not sent again
    reader.handle(load("b", 1, 5.0, ["m"], epoch="f"))  # a new sidecar of b, now with models
    reader.flush()
    assert apply(written.pop()) == [b"M", b"L", b"C"]  # no new pods
    assert got == {"loads": [("ns/a", 4.0), ("ns/b", 5.0)], "models": [("ns/b", ["m"])]}
    reader.flush()
    assert not written  # nothing happened since


def test_an_unchanged_reading_is_held_and_passed_on_when_its_refresh_is_due() -> None:
    """An engine re-reporting the same load does not wake the router on every message: the
    reader passes the newest such reading on ``refresh`` seconds after the last one it sent, so a
    sidecar that stopped still ages out ``stale_after`` after its last message."""
    written: list[bytes] = []
    now = [100.0]
    reader = Reader(written.append, refresh=5.0, clock=lambda: now[0])
    sent_at = time.time()

    def load(seq: int, waiting: float, age: float = 0.0) -> bytes:
        return EngineLoad(
            namespace="ns", pod="a", model="m", epoch="e", seq=seq, sent_at=sent_at - age, waiting=waiting
        ).to_bytes()

    got: list[tuple[str, float, float]] = []

    class Sink:
        def loads(self, batch: list[tuple[str, float, float, float, float, float, float]]) -> None:
            got.extend((key, received, waiting) for key, received, _, waiting, *_ in batch)

        def models(self, key: str, models: list[str], base_models: list[str]) -> None: ...

    feed = LoadFeed("nats://unused", stale_after=10.0)
    feed.sink = Sink()

    def loads() -> list[tuple[str, float, float]]:
        """(pod, received, waiting) of the L frame of the last batch; [] when none was written."""
        got.clear()
        data = written.pop() if written else b""
        while data:
            kind, size = HEADER.unpack_from(data)
            feed.apply_frame(kind, data[HEADER.size : HEADER.size + size])
            data = data[HEADER.size + size :]
        return list(got)

    reader.handle(load(1, 2.0))
    reader.flush()
    [(_, first, waiting)] = loads()
    assert waiting == 2.0
    now[0] += 1.0
    reader.handle(load(2, 2.0))  # the same load again: held
    reader.flush()
    assert loads() == []  # counted (a C frame), no load
    now[0] += 1.0
    reader.handle(load(3, 2.0, age=-1.0))  # held: the newest received is kept
    reader.flush()
    assert loads() == []
    now[0] += 3.0  # 5 s after the last one sent: the held reading goes, with its own received
    reader.flush()
    [(_, received, waiting)] = loads()
    assert (waiting, received > first) == (2.0, True)
    now[0] += 10.0  # the sidecar stopped: nothing is held, nothing sent
    reader.flush()
    assert loads() == []
    reader.handle(load(4, 2.0))
    reader.handle(load(5, 3.0))  # a change goes with the next batch
    reader.flush()
    assert [w for _, _, w in loads()] == [3.0]
    reader.handle(load(6, 2.0))  # back to the value sent before: a change too
    reader.flush()
    assert [w for _, _, w in loads()] == [2.0]
