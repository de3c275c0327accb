"""Two local stacks started at once on one machine (issue 10): both bring the demo boosters to
Active, and each router answers through its own stack's engines — pod addresses never collide,
and no pod is Ready on the other stack's engine."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ferry_local.paths import repo_root, state_dir
from ferry_local.stack import StackInfo
from openai import OpenAI

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
QWEN = "qwen"


def ferry_local(state: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ferry_local", "--state", str(state), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def stacks() -> Iterator[list[StackInfo]]:
    states = [Path(tempfile.mkdtemp(prefix=f"two-stacks-{n}-", dir=state_dir())) for n in "ab"]
    try:
        ups = [ferry_local(state, "up") for state in states]  # at once
        for up in ups:
            out, err = up.communicate(timeout=600)
            assert up.returncode == 0, f"ferry-local up failed:\n{out}\n{err}"
        infos = [StackInfo.load(state) for state in states]
        assert all(infos)
        yield [info for info in infos if info is not None]
    finally:
        for state in states:
            down = ferry_local(state, "down")
            down.communicate(timeout=180)


def kubectl(info: StackInfo, *args: str, input: str | None = None) -> str:
    done = subprocess.run([info.kubectl, "--kubeconfig", info.kubeconfig, *args], input=input,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def boosters_active(info: StackInfo) -> bool:
    items = json.loads(kubectl(info, "-n", "ferry-demo", "get", "modelboosters", "-o", "json"))["items"]
    return len(items) == 2 and all(
        any(
            c["type"] == "Active" and c["status"] == "True"
            for c in (b.get("status") or {}).get("conditions") or []
        )
        for b in items
    )


def pod_ips(info: StackInfo) -> set[str]:
    pods: list[dict[str, Any]] = json.loads(kubectl(info, "-n", "ferry-demo", "get", "pods", "-o", "json"))[
        "items"
    ]
    return {p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")}


def prompts_seen(ip: str) -> str:
    answer = httpx.get(f"http://{ip}:8000/mock/requests", timeout=5)
    return answer.text if answer.status_code == 200 else ""


def test_two_stacks_on_one_machine_each_serve_through_their_own_engines(stacks: list[StackInfo]) -> None:
    demo = repo_root() / "deploy" / "local" / "demo"
    for info in stacks:
        kubectl(info, "apply", "-f", str(demo))
    deadline = time.monotonic() + 300
    while not all(boosters_active(info) for info in stacks):
        assert time.monotonic() < deadline, "the demo boosters did not become Active on both stacks"
        time.sleep(2)

    ips = [pod_ips(info) for info in stacks]
    assert all(ips)
    assert not ips[0] & ips[1], f"the two stacks' pods share addresses: {ips[0] & ips[1]}"
    for n, info in enumerate(stacks):
        client = OpenAI(base_url=f"{info.router_url}/v1", api_key="test", timeout=30, max_retries=0)
        marker = f"from-stack-{n}-{time.monotonic_ns()}"
        answer = client.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": marker}])
        assert answer.choices[0].message.content
        assert any(marker in prompts_seen(ip) for ip in ips[n]), "the router's own engines did not answer"
        assert not any(marker in prompts_seen(ip) for ip in ips[1 - n]), "the other stack's engine answered"
