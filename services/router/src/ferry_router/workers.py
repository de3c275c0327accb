"""Multi-process mode: ``FERRY_ROUTER_WORKERS=N`` runs N router processes on one port.

Each worker is a whole router (its own event loop, bus feed, scraper and upstream pool) bound with
SO_REUSEPORT, so the kernel spreads connections over them and one router pod uses all its cores.
State needs no sharing: every worker reads the routing state from the bus itself, and global rate
limits already live in a NATS KV bucket (local buckets are per worker). Worker ``i`` serves its
probes and metrics on ``FERRY_ROUTER_METRICS_PORT + i``; only worker 0 runs the debug listener.
The supervisor forwards SIGTERM/SIGINT (each worker drains on its own) and exits when all have.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from types import FrameType

from ferry_router.settings import RouterSettings

WORKER_ENTRY = "from ferry_router.__main__ import main; main()"


def worker_env(settings: RouterSettings, index: int) -> dict[str, str]:
    env = {
        **os.environ,
        "FERRY_ROUTER_WORKER_INDEX": str(index),
        "FERRY_ROUTER_PORT": str(settings.port),
        "FERRY_ROUTER_METRICS_PORT": str(settings.metrics_port + index),
    }
    if index:
        env["FERRY_ROUTER_DEBUG_PORT"] = "-1"
    return env


def supervise(settings: RouterSettings) -> int:
    """Start ``settings.workers`` workers, forward stop signals, return the worst exit code."""
    if settings.port == 0:
        raise SystemExit("ferry-router: FERRY_ROUTER_WORKERS > 1 needs an explicit FERRY_ROUTER_PORT")
    children = [
        subprocess.Popen([sys.executable, "-c", WORKER_ENTRY], env=worker_env(settings, i))
        for i in range(settings.workers)
    ]

    def forward(signum: int, _: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max((abs(code) for code in codes), default=0)
