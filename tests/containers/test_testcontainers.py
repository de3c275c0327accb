"""The suite's own fixture path "testcontainers when an engine answers", run for real: the converter's
bus tests in a separate pytest session whose only engine is the one the project set up (podman here,
Docker on a laptop), NATS from the locally built image, Ryuk disabled (the fixture stops its container)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from ferry_local.paths import repo_root

from tests.support.containers import ContainerEngine

pytestmark = [pytest.mark.integration, pytest.mark.containers]

USERS_TEST = (
    "tests/integration/test_converter_nats.py::test_runs_as_the_converter_user_named_by_the_environment"
)


@pytest.mark.timeout(900)
def test_the_nats_fixture_starts_a_container_on_the_engine(engine: ContainerEngine) -> None:
    env = {k: v for k, v in engine.env.items() if k not in ("NATS_URL", "KUBECONFIG", "PYTEST_ADDOPTS")}
    env["FERRY_TESTCONTAINERS_K3S"] = "0"  # no k3s image can be had here; kube stays the local stack
    if nats_image := engine.images.get("FERRY_NATS_IMAGE"):
        env["FERRY_NATS_IMAGE"] = nats_image
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "log_cli=true",
         "--log-cli-level=INFO", "tests/integration/test_converter_nats.py",
         # needs the local nats-server's service users (the main session runs it there)
         "--deselect", f"{USERS_TEST}"],
        cwd=repo_root(), env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = done.stdout[-4000:] + done.stderr[-2000:]
    assert done.returncode == 0, tail
    assert "Container started" in done.stdout, f"NATS did not come from testcontainers:\n{tail}"
    summary = done.stdout.strip().splitlines()[-1]
    assert re.search(r"\b\d+ passed\b", summary), tail
    assert not re.search(r"\b(failed|error|skipped)\b", summary), tail
