"""The router's load reader alone: CPU per pushed load message, and what reaches the router.

    uv run python bench/router_scale/load_reader.py [--pods 20000] [--rate 1] [--seconds 10]
        [--unchanged] [--python /work/main/.venv/bin/python] [--profile out.txt]

A private nats-server gets ``--pods`` engines' load on ``ferry.load.>`` from ``run.py``'s pusher
(``--rate`` messages per pod per second; each with a new value, or with ``--unchanged`` the same
load every time: idle engines re-reporting), and one load reader child
(``python -m ferry_router.state.load_reader``, run by ``--python``: another worktree's interpreter
runs that tree's reader, for an A/B in one sitting) reads it as the router's child does, its
batches read off the pipe here. After a warm-up, over ``--seconds``, it prints the reader's
CPU-seconds (user + system from ``/proc``), the messages it read, CPU per message, and the pod
records it passed on to the router (each one is router work: about 1.6 µs a pod). ``--profile``
records the reader with py-spy (raw) meanwhile. Loopback only, bounded; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nats
from ferry_local.binaries import find_binaries
from ferry_local.natsd import NatsServer, service_url
from ferry_router.state.load_reader import (
    BATCH_ENV,
    COUNTS,
    FD_ENV,
    FILTER_ENV,
    HEADER,
    LOAD,
    PARENT_ENV,
    REFRESH_ENV,
    STREAM_ENV,
)
from ferry_schemas.bus import LOAD_STREAM
from ferry_schemas.load import LOAD_FILTER
from ferry_schemas.runtime.jetstream import declare_streams

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.router_scale.run import LoadPusher


class Batches:
    """Reads the reader's pipe: messages it read (``C``) and pod records it passed on (``L``)."""

    def __init__(self, fd: int) -> None:
        self.read = self.records = 0
        self._file = os.fdopen(fd, "rb", buffering=0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._file.read(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _run(self) -> None:
        try:
            while True:
                kind, size = HEADER.unpack(self._exactly(HEADER.size))
                payload = self._exactly(size)
                if kind == b"C":
                    self.read += COUNTS.unpack(payload)[0]
                elif kind == b"L":
                    self.records += size // LOAD.size
        except EOFError:
            return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=1.0, help="messages per pod per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--unchanged", action="store_true", help="every message repeats the pod's load")
    parser.add_argument("--python", default=sys.executable, help="the interpreter (worktree) of the reader")
    parser.add_argument("--profile", help="py-spy raw output of the reader over the window")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-load-reader-"))
    server = NatsServer(find_binaries().nats_server, work / "store", work / "logs")
    server.start()
    reader: subprocess.Popen[bytes] | None = None
    try:

        async def streams() -> None:
            nc = await nats.connect(server.url)
            await declare_streams(nc.jetstream())
            await nc.close()

        asyncio.run(streams())
        read_fd, write_fd = os.pipe()
        env = {
            **os.environ, "FERRY_NATS_URL": service_url("router", server.url), STREAM_ENV: LOAD_STREAM,
            FILTER_ENV: LOAD_FILTER, BATCH_ENV: "0.1", FD_ENV: str(write_fd), PARENT_ENV: str(os.getpid()),
            REFRESH_ENV: "7.5",  # the router's default: stale_after (15 s) / 2; readers before it ignore it
        }  # fmt: skip
        reader = subprocess.Popen(
            [args.python, "-m", "ferry_router.state.load_reader"], env=env, pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(write_fd)
        batches = Batches(read_fd)
        with LoadPusher(server.url, 2000, args.pods, args.rate, unchanged=args.unchanged) as pusher:
            time.sleep(args.warmup)
            sent, read, records, cpu = pusher.sent, batches.read, batches.records, cpu_seconds(reader.pid)
            profiler = None
            if args.profile:
                profiler = subprocess.Popen(
                    ["py-spy", "record", "-p", str(reader.pid), "-d", str(int(args.seconds)), "-r", "200",
                     "-f", "raw", "-o", args.profile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
            time.sleep(args.seconds)
            cpu = cpu_seconds(reader.pid) - cpu
            sent, read = pusher.sent - sent, batches.read - read
            records = batches.records - records
            if profiler is not None:
                profiler.wait(60)
        per = cpu / read * 1e6 if read else float("nan")
        pushed = "unchanged" if args.unchanged else "changing"
        print(
            f"load {os.getloadavg()[0]:.1f} | {args.python} | {pushed} | "
            f"sent {sent / args.seconds:,.0f}/s read {read / args.seconds:,.0f}/s | "
            f"reader {cpu / args.seconds * 100:.1f} % of a core, {per:.2f} µs/message | "
            f"to the router {records / args.seconds:,.0f} pods/s"
        )
    finally:
        if reader is not None:
            reader.terminate()
            reader.wait(10)
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
