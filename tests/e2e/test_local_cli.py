"""`ferry-local up | status | down` as a user runs them: status says where the router answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ferry_local.paths import state_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def ferry_local(state: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry_local", "--state", str(state), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack_state() -> Iterator[Path]:
    state = Path(tempfile.mkdtemp(prefix="cli-stack-", dir=state_dir()))
    try:
        up = ferry_local(state, "up")
        assert up.returncode == 0, f"ferry-local up failed:\n{up.stdout}\n{up.stderr}"
        yield state
    finally:
        down = ferry_local(state, "down", timeout=120)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stderr


def test_status_prints_the_router_url_and_the_router_answers_there(stack_state: Path) -> None:
    done = ferry_local(stack_state, "status", timeout=30)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line and " " not in line)
    assert fields.get("ROUTER_URL", "").startswith("http://127.0.0.1:"), done.stdout
    assert httpx.get(f"{fields['ROUTER_URL']}/readyz", timeout=5).status_code == 200
    models = httpx.get(f"{fields['ROUTER_URL']}/v1/models", timeout=5)
    assert models.status_code == 200
    assert models.json()["object"] == "list"
    assert "ferry-router" in done.stdout
    assert "KUBECONFIG=" in done.stdout


def test_status_of_a_stopped_stack_says_so() -> None:
    with tempfile.TemporaryDirectory(dir=state_dir()) as empty:
        done = ferry_local(Path(empty), "status", timeout=30)
    assert done.returncode == 1
    assert "not running" in done.stderr
