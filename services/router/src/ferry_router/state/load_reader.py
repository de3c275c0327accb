"""Engine load from ``FERRY_LOAD`` read in a process of its own, handed to the router in batches.

At 20,000 engines each pushing its load once a second, decoding the messages (nats-py's per-message
work plus the decode) took most of a core inside the router: on its scraper thread it still held
the GIL the request loop needs, and route changes and requests waited behind it (tens of ms). So a
child process (``python -m ferry_router.state.load_reader``, one per router process) follows the
stream (the last message per pod, then changes), keeps only the newest reading per pod and, every
``FERRY_ROUTER_LOAD_BATCH`` seconds (default 0.1), writes the pods that changed as one line of
JSON to a pipe the router gave it::

    {"ok": <messages decoded>, "bad": <undecodable>, "loads": [[pod_key, received, kv, waiting,
     running, ttft, tpot, models | null, base_models], ...]}

``received`` is on ``time.monotonic``'s clock, which is the system's (CLOCK_MONOTONIC) and so the
same in the router: the sidecar's read time (``sentAt``), never later than the child saw it. The
router (:class:`LoadFeed`) applies a batch to its table in one pass on its scraper thread: a few
µs per changed pod instead of the whole per-message cost, and load arrives at most one batch
period (plus the sidecar's own read interval) later than it would in-process.

The child exits when the router does (its parent changes) and the router starts a new one when it
dies, so a crash costs at most a restart's worth of load age (stale load reads as unknown as
always).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from ferry_schemas.bus import LOAD_STREAM
from ferry_schemas.load import LOAD_FILTER
from ferry_schemas.runtime.load_board import LOAD_MESSAGES, LatestLoads
from nats.aio.msg import Msg

log = logging.getLogger(__name__)

BATCH_ENV = "FERRY_ROUTER_LOAD_BATCH"
FD_ENV = "FERRY_ROUTER_LOAD_FD"  # the pipe the batches go to (stdout stays free for anything else)
DEFAULT_BATCH = 0.1
LINE_LIMIT = 64 * 1024 * 1024  # one batch of 20,000 changed pods is about 2 MB


@dataclass(slots=True)
class PushedReading:
    """One engine's load as its sidecar last published it (what the router schedules on)."""

    kv_cache_usage: float
    waiting: float
    running: float
    ttft: float
    tpot: float
    models: list[str] | None
    base_models: list[str]


Record = tuple[str, float, float, float, float, float, float, list[str] | None, list[str]]


def decode(data: bytes, wall: float, monotonic: float) -> tuple[str, str, int, Record]:
    """(pod key, epoch, seq, record) of one ``EngineLoad`` message; raises on a malformed one.

    Only the fields the router uses are read (orjson, no model validation: about 2 µs against
    pydantic's 18)."""
    raw = orjson.loads(data)
    key = f"{raw['namespace']}/{raw['pod']}"
    if not isinstance(raw["namespace"], str) or not isinstance(raw["pod"], str):
        raise TypeError("namespace and pod must be strings")
    received = monotonic - max(0.0, wall - float(raw["sentAt"]))
    models = raw.get("models")
    if models is not None and not isinstance(models, list):
        raise TypeError("models must be a list")
    base = raw.get("baseModels") or []
    record: Record = (
        key,
        received,
        float(raw.get("kvCacheUsage", 0.0)),
        float(raw.get("waiting", 0.0)),
        float(raw.get("running", 0.0)),
        float(raw.get("ttft", 0.0)),
        float(raw.get("tpot", 0.0)),
        models,
        base,
    )
    return key, str(raw["epoch"]), int(raw["seq"]), record


class Reader:
    """The child's state: newest record per pod, those changed since the last batch."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._seq: dict[str, tuple[str, int]] = {}  # pod key -> (epoch, seq) last taken
        self._pending: dict[str, Record] = {}
        self.ok = self.bad = 0

    def handle(self, data: bytes) -> None:
        try:
            key, epoch, seq, record = decode(data, time.time(), time.monotonic())
        except (ValueError, TypeError, KeyError) as exc:
            self.bad += 1
            log.error("undecodable engine load: %r", exc)
            return
        self.ok += 1
        last = self._seq.get(key)
        if last is not None and last[0] == epoch and last[1] >= seq:
            return  # an older message of the same sidecar (redelivered snapshot)
        self._seq[key] = (epoch, seq)
        self._pending[key] = record

    def flush(self) -> None:
        if not (self._pending or self.ok or self.bad):
            return
        line = orjson.dumps({"ok": self.ok, "bad": self.bad, "loads": list(self._pending.values())})
        self._pending.clear()
        self.ok = self.bad = 0
        self._write(line + b"\n")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _child(nats_url: str, batch: float, fd: int) -> None:
    from ferry_schemas.runtime.jetstream import connect
    from nats.js.api import DeliverPolicy

    reader = Reader(functools.partial(write_all, fd))
    nc = await connect(nats_url, "ferry-router-load")

    async def on_message(msg: Msg) -> None:
        reader.handle(msg.data)

    # the ordered consumer alone: no per-message metadata (StreamFollower's sync tracking), which
    # cost as much as decoding the message
    while True:
        try:
            await nc.jetstream().subscribe(
                LOAD_FILTER,
                stream=LOAD_STREAM,
                cb=on_message,
                ordered_consumer=True,
                deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            )
            break
        except Exception as exc:  # the stream is not declared yet, NATS is reconnecting...
            log.warning("load reader: cannot subscribe to %s, retrying: %r", LOAD_STREAM, exc)
            await asyncio.sleep(1.0)
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            await asyncio.sleep(batch)
            reader.flush()
    except BrokenPipeError:
        pass  # the router went away
    finally:
        with contextlib.suppress(Exception):
            await nc.close()


def main() -> None:
    logging.basicConfig(level=os.environ.get("FERRY_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    batch = float(os.environ.get(BATCH_ENV) or DEFAULT_BATCH)
    asyncio.run(_child(os.environ["FERRY_NATS_URL"], batch, int(os.environ[FD_ENV])))


LoadCallback = Callable[[str, PushedReading, float], None]
"""``callback(pod_key, reading, received)``."""


class LoadFeed(LatestLoads[PushedReading]):
    """The router's side: runs the child, keeps the newest reading per pod with its time, and calls
    ``callbacks`` for each pod in a batch (see the module docstring). Runs on one event loop (the
    scraper's)."""

    def __init__(
        self,
        nats_url: str,
        *,
        stale_after: float,
        batch: float = DEFAULT_BATCH,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nats_url = nats_url
        super().__init__(stale_after, clock)
        self.batch = batch
        self.callbacks: list[LoadCallback] = []
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def apply_batch(self, line: bytes) -> int:
        """Take one batch line of the child; returns the pods in it."""
        batch: dict[str, Any] = orjson.loads(line)
        if batch["ok"]:
            LOAD_MESSAGES.labels("ok").inc(batch["ok"])
        if batch["bad"]:
            LOAD_MESSAGES.labels("bad").inc(batch["bad"])
        latest, callbacks = self._latest, self.callbacks
        loads = batch["loads"]
        for key, received, kv, waiting, running, ttft, tpot, models, base in loads:
            reading = PushedReading(kv, waiting, running, ttft, tpot, models, base)
            latest[key] = (reading, received)
            for callback in callbacks:
                try:
                    callback(key, reading, received)
                except Exception:
                    log.exception("load callback failed for %s", key)
        return len(loads)

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
        env = {
            **os.environ,
            "FERRY_NATS_URL": self.nats_url,
            BATCH_ENV: str(self.batch),
            FD_ENV: str(write_fd),
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
        stream = asyncio.StreamReader(limit=LINE_LIMIT, loop=loop)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(stream, loop=loop), os.fdopen(read_fd, "rb", buffering=0)
        )
        return stream

    async def _run(self) -> None:
        while True:
            try:
                stream = await self._spawn()
                while line := await stream.readline():
                    try:
                        self.apply_batch(line)
                    except (ValueError, KeyError, TypeError) as exc:
                        log.error("bad batch from the load reader: %r", exc)
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
