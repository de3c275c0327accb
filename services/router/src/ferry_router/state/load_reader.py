"""Engine load from ``FERRY_LOAD`` read in a process of its own, handed to the router in batches.

At 20,000 engines each pushing its load once a second, reading the messages (nats-py's per-message
work plus the decode, 14-17 µs of CPU each) took a third of a core inside the router: on its
scraper thread it still held the GIL the request loop needs, and route changes and requests waited
behind it (tens of ms). So a child process (``python -m ferry_router.state.load_reader``, one per
router process) follows the stream (the last message per pod, then changes) with a NATS client of
its own (:mod:`~ferry_router.state.load_wire`: frames cut straight from the socket buffer, no
object or task per message), keeps only the newest reading per pod and, every
``FERRY_ROUTER_LOAD_BATCH`` seconds (default 0.1), writes the pods that changed to a pipe the router
gave it, in frames of ``kind`` (1 byte) + payload length (u32) + payload:

* ``K``: the keys (``namespace/pod``) of pods seen for the first time, JSON list; the n-th key
  ever sent is slot n;
* ``M``: ``[[slot, models, base_models], ...]`` (JSON) for pods whose ``/v1/models`` changed;
* ``L``: one fixed 52-byte record per pod (:data:`LOAD`): slot, received, KV-cache usage,
  waiting, running, TTFT, TPOT -- no JSON and no object per pod to decode in the router;
* ``C``: messages decoded and undecodable since the last batch (two u32).

A reading equal to the last one passed on (an idle engine re-reporting its load, a sidecar's
heartbeat) only says the load is still fresh: it is held and passed on once
``FERRY_ROUTER_LOAD_REFRESH`` seconds (the router's ``stale_after`` / 2) after the last one, so the
router is not woken per message and a stopped sidecar still ages out ``stale_after`` after its last
message (see :class:`Reader`).

``received`` is on ``time.monotonic``'s clock, which is the system's (CLOCK_MONOTONIC) and so the
same in the router: the sidecar's read time (``sentAt``), never later than the child saw it.
The router (:class:`LoadFeed`) applies a batch in one pass on its scraper thread (about 1 µs per
pod), and load arrives at most one batch period later than it would in-process.

The child runs at a lower CPU priority (``FERRY_ROUTER_LOAD_NICE``, default 5): where it shares a
core with the router, a request is not kept waiting by a burst of load messages -- the load waits
(its age shows in ``ferry_router_endpoint_load_age_seconds``).

The child exits when the router does (its parent changes) and the router starts a new one when it
dies, so a crash costs at most a restart's worth of load age (stale load reads as unknown as
always). A NATS restart does not end it: it connects again and follows the stream again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import os
import struct
import sys
import time
from collections.abc import Callable
from typing import Protocol

import msgspec
import orjson

# The child imports only what reading the stream needs (asyncio, ssl, orjson, msgspec; not even nats-py);
# the bus contracts (pydantic), aiohttp and prometheus_client would double that, and
# the child's memory counts in the router's. So the router passes the stream and subjects, and
# the router-side names are imported where the router uses them.

log = logging.getLogger(__name__)

BATCH_ENV = "FERRY_ROUTER_LOAD_BATCH"
FD_ENV = "FERRY_ROUTER_LOAD_FD"  # the pipe the batches go to (stdout stays free for anything else)
PARENT_ENV = "FERRY_ROUTER_LOAD_PARENT"  # the router's pid: the reader ends when it is gone
DEFAULT_BATCH = 0.1
STREAM_ENV = "FERRY_ROUTER_LOAD_STREAM"  # the stream and subject filter, from the router's contracts
FILTER_ENV = "FERRY_ROUTER_LOAD_FILTER"
NICE_ENV = "FERRY_ROUTER_LOAD_NICE"
DEFAULT_NICE = 5
REFRESH_ENV = "FERRY_ROUTER_LOAD_REFRESH"  # an unchanged reading is passed on at least this often
DEFAULT_REFRESH = 7.5  # LoadFeed passes half its stale_after (15 s by default)

HEADER = struct.Struct("<cI")
LOAD = struct.Struct("<Idddddd")
COUNTS = struct.Struct("<II")

Load = tuple[float, float, float, float, float, float]
"""(received, kv_cache_usage, waiting, running, ttft, tpot) of one engine."""
Values = tuple[float, float, float, float, float]
"""A :data:`Load` without ``received``: what changes the router's view of an engine."""


Decoded = tuple[str, str, int, Load, list[str] | None, list[str]]
"""(pod key, epoch, seq, load, models, base models) of one message."""


class _Message(msgspec.Struct, rename="camel"):
    """The fields of an ``EngineLoad`` the router uses, types checked as they are read (msgspec:
    no dict of the whole message, unknown fields skipped)."""

    namespace: str
    pod: str
    epoch: str
    seq: int
    sent_at: float
    kv_cache_usage: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    ttft: float = 0.0
    tpot: float = 0.0
    models: list[str] | None = None
    base_models: list[str] | None = None


_decoder = msgspec.json.Decoder(_Message)
BadMessage = (ValueError, TypeError, KeyError, msgspec.DecodeError)
"""What :func:`decode` raises on a malformed message."""


def decode(data: bytes, wall: float, monotonic: float) -> Decoded:
    """What the router uses of one ``EngineLoad`` message; raises one of :data:`BadMessage` on a
    malformed one."""
    m = _decoder.decode(data)
    age = wall - m.sent_at
    load = (monotonic - age if age > 0 else monotonic, m.kv_cache_usage, m.waiting, m.running, m.ttft, m.tpot)
    return f"{m.namespace}/{m.pod}", m.epoch, m.seq, load, m.models, m.base_models or []


def frame(kind: bytes, payload: bytes) -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


SEQ, SENT_AT = b'"seq":', b',"sentAt":'


def split_times(data: bytes) -> tuple[bytes, bytes, bytes, bytes] | None:
    """``(before, seq, sent_at, after)`` of a message as a sidecar writes it (``seq`` then
    ``sentAt``, compact JSON); None for another layout."""
    at = data.find(SEQ)
    sent = data.find(SENT_AT, at)
    end = data.find(b",", sent + 10)
    if at < 0 or sent < 0 or end < 0:
        return None
    return data[:at], data[at + 6 : sent], data[sent + 10 : end], data[end:]


class _Pod:
    """What the reader keeps of one pod."""

    __slots__ = ("epoch", "held", "layout", "models", "pending", "sent", "seq", "slot", "values")

    def __init__(self, slot: int, epoch: str, seq: int) -> None:
        self.slot, self.epoch, self.seq = slot, epoch, seq
        self.pending: Load | None = None  # the newest reading, for the next batch
        self.values: Values | None = None  # the load last passed on
        self.sent = 0.0  # when (the reader's clock)
        self.held: float | None = None  # ``received`` of the newest reading equal to it, not passed on
        self.models: tuple[list[str], list[str]] | None = None  # last passed on
        self.layout: tuple[bytes, bytes] | None = None  # the last message but its seq and sentAt


class Reader:
    """The child's state: a slot per pod, the newest load per pod changed since the last batch.

    A reading equal to the last one passed on (an engine re-reporting the same load, its sidecar's
    heartbeat) is not passed on at once: the router would only learn that the load is still fresh.
    It is passed on ``refresh`` seconds after the last one (with its newer ``received``), so the
    router's ``updated`` lags the newest message by at most ``refresh`` and a sidecar that stopped
    ages out ``stale_after`` after its last message, as before, as long as ``refresh`` is well below
    ``stale_after``. Such a message is not even decoded: when it is byte for byte the pod's last
    one but for ``seq`` and ``sentAt``, only those two are read."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        *,
        refresh: float = DEFAULT_REFRESH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._write = write
        self.refresh = refresh
        self._clock = clock
        self._pods: dict[str, _Pod] = {}
        self._by_layout: dict[bytes, _Pod] = {}  # the bytes before "seq" (pod, epoch) -> its pod
        self._new_keys: list[str] = []
        self._pending: list[_Pod] = []  # pods with a reading for the next batch
        self._pending_models: list[tuple[int, list[str], list[str]]] = []
        self._due: list[tuple[float, int, _Pod]] = []  # (when a held reading is due, slot, pod), a heap
        self.ok = self.bad = 0

    def handle(self, data: bytes) -> None:
        parts = split_times(data)
        if parts is not None:
            pod = self._by_layout.get(parts[0])
            if pod is not None and pod.layout is not None and pod.layout[1] == parts[3]:
                try:
                    seq, sent_at = int(parts[1]), float(parts[2])
                except ValueError:
                    pass
                else:
                    self.ok += 1
                    if seq > pod.seq:
                        pod.seq = seq
                        self._hold(pod, time.monotonic() - max(0.0, time.time() - sent_at))
                    return
        try:
            key, epoch, seq, load, models, base = decode(data, time.time(), time.monotonic())
        except BadMessage as exc:
            self.bad += 1
            log.error("undecodable engine load: %r", exc)
            return
        self.ok += 1
        pod = self._pods.get(key)
        if pod is None:
            pod = self._pods[key] = _Pod(len(self._pods), epoch, seq)
            self._new_keys.append(key)
        elif pod.epoch != epoch:  # a new sidecar: its load and models are passed on again
            pod.epoch, pod.seq, pod.values, pod.models = epoch, seq, None, None
        elif pod.seq >= seq:
            return  # an older message of the same sidecar (redelivered snapshot)
        else:
            pod.seq = seq
        if parts is not None:
            layout = pod.layout
            if layout is None or layout[0] != parts[0]:  # a new pod or sidecar (epoch)
                if layout is not None and self._by_layout.get(layout[0]) is pod:
                    del self._by_layout[layout[0]]
                self._by_layout[parts[0]] = pod
            pod.layout = (parts[0], parts[3])
        if pod.pending is None and load[1:] == pod.values:
            self._hold(pod, load[0])
        else:
            if pod.pending is None:
                self._pending.append(pod)
            pod.pending, pod.held = load, None
        if models is not None and pod.models != (models, base):
            pod.models = (models, base)
            self._pending_models.append((pod.slot, models, base))

    def _hold(self, pod: _Pod, received: float) -> None:
        if pod.pending is not None:  # a newer reading of a changed load: it replaces the pending one
            pod.pending = (received, *pod.pending[1:])
            return
        if pod.held is None:
            heapq.heappush(self._due, (pod.sent + self.refresh, pod.slot, pod))
        pod.held = received

    def _release_due(self, now: float) -> None:
        """Held readings whose refresh is due join the batch."""
        due = self._due
        while due and due[0][0] <= now:
            _, slot, pod = heapq.heappop(due)
            if pod.held is None:
                continue  # passed on since (changed)
            when = pod.sent + self.refresh
            if when > now:  # passed on since, then held again: due later
                heapq.heappush(due, (when, slot, pod))
                continue
            assert pod.values is not None
            pod.pending, pod.held = (pod.held, *pod.values), None
            self._pending.append(pod)

    def flush(self) -> None:
        now = self._clock()
        self._release_due(now)
        if not (self._pending or self.ok or self.bad):
            return
        frames = []
        if self._new_keys:
            frames.append(frame(b"K", orjson.dumps(self._new_keys)))
            self._new_keys = []
        if self._pending_models:
            frames.append(frame(b"M", orjson.dumps(self._pending_models)))
            self._pending_models = []
        if self._pending:
            pack, records = LOAD.pack, []
            for pod in self._pending:
                load = pod.pending
                assert load is not None
                records.append(pack(pod.slot, *load))
                pod.pending, pod.values, pod.sent = None, load[1:], now
            frames.append(frame(b"L", b"".join(records)))
            self._pending = []
        frames.append(frame(b"C", COUNTS.pack(self.ok, self.bad)))
        self.ok = self.bad = 0
        self._write(b"".join(frames))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _child(
    nats_url: str, stream: str, subjects: str, batch: float, refresh: float, fd: int, parent: int
) -> None:
    from ferry_router.state.load_wire import LoadSubscription

    reader = Reader(functools.partial(write_all, fd), refresh=refresh)
    subscription = LoadSubscription(nats_url, stream, subjects, reader.handle, "ferry-router-load")
    orphaned = asyncio.Event()
    watch = asyncio.create_task(_watch_parent(parent, orphaned))
    reading = asyncio.create_task(subscription.run())
    try:
        while not orphaned.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(orphaned.wait(), batch)
            if reading.done():  # a bug, not the bus (that reconnects): the router starts another reader
                reading.result()
                return
            reader.flush()
    except BrokenPipeError:
        pass  # the router went away
    finally:
        watch.cancel()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading


async def _watch_parent(parent: int, orphaned: asyncio.Event) -> None:
    """Sets ``orphaned`` once the router that started this process is gone (re-parented), in every
    phase — a reader still connecting to an unreachable NATS must not outlive its router."""
    while True:
        if os.getppid() != parent:
            orphaned.set()
            return
        await asyncio.sleep(0.5)


def main() -> None:
    logging.basicConfig(level=os.environ.get("FERRY_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    try:  # the request loop wins the CPU when both want it: load gets older, requests do not wait
        os.nice(int(os.environ.get(NICE_ENV) or DEFAULT_NICE))
    except (OSError, ValueError) as exc:
        log.warning("load reader: niceness not changed: %r", exc)
    batch = float(os.environ.get(BATCH_ENV) or DEFAULT_BATCH)
    # the pid the router passed, not getppid() now: a router that died before this line would
    # leave the reader comparing against init's pid for ever
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    refresh = float(os.environ.get(REFRESH_ENV) or DEFAULT_REFRESH)
    nats_url, stream, subjects = os.environ["FERRY_NATS_URL"], os.environ[STREAM_ENV], os.environ[FILTER_ENV]
    try:  # as the router: its socket reads and callbacks in C
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    asyncio.run(_child(nats_url, stream, subjects, batch, refresh, int(os.environ[FD_ENV]), parent))


class LoadSink(Protocol):
    """Where a batch goes (the router's :class:`~ferry_router.state.pushed_load.PushedLoad`)."""

    def loads(self, loads: list[tuple[str, float, float, float, float, float, float]]) -> None:
        """``(pod_key, received, kv, waiting, running, ttft, tpot)`` of each pod in a batch."""

    def models(self, key: str, models: list[str], base_models: list[str]) -> None: ...


class LoadFeed:
    """The router's side: runs the child and hands each batch to ``sink`` (see the module
    docstring). Runs on one event loop (the scraper's)."""

    def __init__(self, nats_url: str, *, stale_after: float, batch: float = DEFAULT_BATCH) -> None:
        from ferry_schemas.runtime.load_board import LOAD_MESSAGES

        self._messages = LOAD_MESSAGES
        self.nats_url = nats_url
        self.stale_after = stale_after
        self.batch = batch
        self.sink: LoadSink | None = None
        self.restarts = 0
        self._keys: list[str] = []  # slot -> pod key, for the running child
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def apply_frame(self, kind: bytes, payload: bytes) -> None:
        """Take one frame of the child."""
        sink, keys = self.sink, self._keys
        if kind == b"K":
            keys.extend(orjson.loads(payload))
        elif kind == b"L":
            if sink is not None:
                sink.loads([(keys[slot], *load) for slot, *load in LOAD.iter_unpack(payload)])
        elif kind == b"M":
            if sink is not None:
                for slot, models, base in orjson.loads(payload):
                    sink.models(keys[slot], models, base)
        elif kind == b"C":
            ok, bad = COUNTS.unpack(payload)
            if ok:
                self._messages.labels("ok").inc(ok)
            if bad:
                self._messages.labels("bad").inc(bad)
        else:
            raise ValueError(f"unknown frame kind {kind!r}")

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="router-load-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._end_child()

    async def _end_child(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _spawn(self) -> asyncio.StreamReader:
        """Start a reader process; returns the read end of its batch pipe."""
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        from ferry_schemas.bus import LOAD_STREAM
        from ferry_schemas.load import LOAD_FILTER

        env = {
            **os.environ,
            "FERRY_NATS_URL": self.nats_url,
            STREAM_ENV: LOAD_STREAM,
            FILTER_ENV: LOAD_FILTER,
            BATCH_ENV: str(self.batch),
            REFRESH_ENV: str(self.stale_after / 2),
            FD_ENV: str(write_fd),
            PARENT_ENV: str(os.getpid()),
        }
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ferry_router.state.load_reader",
                stdin=asyncio.subprocess.DEVNULL, env=env, pass_fds=(write_fd,),
            )  # fmt: skip
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        stream = asyncio.StreamReader(loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream, loop=loop), os.fdopen(read_fd, "rb", buffering=0)
        )
        return stream

    async def _run(self) -> None:
        while True:
            try:
                stream = await self._spawn()
                self._keys = []  # a new child numbers its slots afresh
                while True:
                    try:
                        kind, size = HEADER.unpack(await stream.readexactly(HEADER.size))
                        payload = await stream.readexactly(size)
                    except asyncio.IncompleteReadError:
                        break  # the child ended
                    self.apply_frame(kind, payload)
                assert self._process is not None
                log.warning("load reader exited (%s): starting another", await self._process.wait())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("load reader failed: starting another")
            await self._end_child()
            self.restarts += 1
            await asyncio.sleep(1.0)


if __name__ == "__main__":
    main()
