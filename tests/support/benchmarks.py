"""``bench/``'s benchmarks for tests: run one as a user would, or import one of its modules.

``run_benchmark`` runs one at a size small enough for the suite. Each starts what it needs (its own
local stack, nats-server, engines and service processes), so ``KUBECONFIG`` and ``NATS_URL`` are
dropped from its environment: it must not reach the tests' cluster. A failure carries the
benchmark's output.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from types import ModuleType

from ferry_local.paths import repo_root

ROOT = repo_root()


def bench_module(name: str) -> ModuleType:
    """Import ``bench.<name>`` as the benchmark scripts find it: ``bench`` lives at the root."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module(f"bench.{name}")


def run_benchmark(*args: str, timeout: float) -> str:
    """Run ``python *args`` from the repository root; its stdout once it exits 0."""
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "NATS_URL")}
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    what = " ".join(args)
    assert done.returncode == 0, f"{what} exited {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout
