"""An Active booster answers: one without ``served-model-name`` is reached through the router.

The ModelServer's ``spec.model`` defaults to the booster's name while vLLM (here the local node's
mock engine, started with the pod's own command line) serves the model path; the router asks the
engine for a model it lists in ``/v1/models`` (Kthena forwards the booster name and gets 404).
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest
import yaml
from ferry_local.paths import repo_root
from ferry_local.system import SystemInfo
from openai import OpenAI

from tests.conftest import KubeEnv

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NAME = "unnamed"


def booster_without_served_model_name(namespace: str) -> dict[str, Any]:
    manifest: dict[str, Any] = yaml.safe_load(
        (repo_root() / "deploy/local/demo/10-quickstart.yaml").read_text()
    )
    manifest["metadata"] = {"name": NAME, "namespace": namespace}
    (worker,) = manifest["spec"]["backend"]["workers"]
    del worker["config"]["served-model-name"]
    return manifest


def active(kube: KubeEnv, namespace: str) -> bool:
    done = kube.kubectl_run("-n", namespace, "get", "modelbooster", NAME, "-o", "json")
    conditions = (json.loads(done.stdout).get("status") or {}).get("conditions") or []
    return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)


def test_a_booster_without_served_model_name_answers_through_the_router(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(booster_without_served_model_name(e2e_namespace)))
    deadline = time.monotonic() + 180
    while not active(kube, e2e_namespace):
        assert time.monotonic() < deadline, "the booster never became Active"
        time.sleep(0.5)

    client = OpenAI(base_url=f"{ferry.router_url}/v1", api_key="test", timeout=30, max_retries=0)
    assert NAME in {m.id for m in client.models.list().data}
    last: Exception | None = None
    deadline = time.monotonic() + 60
    while True:  # the router learns what the engine serves from its first scrape of /v1/models
        try:
            answer = client.chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
            break
        except openai.APIStatusError as exc:
            last = exc
            assert time.monotonic() < deadline, f"every chat for {NAME!r} failed; last: {last}"
            time.sleep(0.5)
    assert answer.choices[0].message.content
    assert answer.model != NAME  # the engine answered for the model it serves (its path)
