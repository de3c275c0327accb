"""The ``ferry`` CLI end to end on the local stack: every service, the router and the local node run;
the CLI creates a model from a template, shows it with get/describe, and chats with it (streamed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ferry_cli.app import app
from ferry_local.system import SystemInfo
from typer.testing import CliRunner

from tests.conftest import KubeEnv
from tests.support.cluster import eventually

pytestmark = pytest.mark.e2e

MODEL = "qwen"
SERVING = "qwen-cpu"


def cli(kube: KubeEnv, *args: str, **env: str) -> Any:
    """``ferry`` with the cluster in ``KUBECONFIG``, as a user runs it."""
    return CliRunner().invoke(app, list(args), env={**kube.env, "COLUMNS": "250", **env})


def active(kube: KubeEnv, namespace: str) -> bool:
    done = kube.kubectl_run("-n", namespace, "get", "modelbooster", MODEL, "-o", "json", check=False)
    if done.returncode != 0:
        return False
    conditions = json.loads(done.stdout).get("status", {}).get("conditions") or []
    return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)


def row(output: str, first: str) -> list[str]:
    return next(line.split() for line in output.splitlines() if line.split()[:1] == [first])


def test_create_get_describe_chat(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str, trace_file: Path
) -> None:
    ns = ["-n", e2e_namespace]
    template = ["--template", "Qwen2.5-0.5B-CPU", "--set", f"name={MODEL}"]

    # --dry-run: the API server validates the manifest (CRD schema + CEL) and stores nothing.
    dry = cli(kube, *ns, "create", "model", *template, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "kind: ModelBooster" in dry.output
    assert f"namespace: {e2e_namespace}" in dry.output
    assert "nothing stored" in dry.output
    assert not active(kube, e2e_namespace)
    refused = cli(kube, *ns, "create", "model", *template, "--set", "replicas=-1", "--dry-run")
    assert refused.exit_code == 1
    assert "spec.backend.replicas" in refused.output, refused.output

    created = cli(kube, *ns, "create", "model", *template)
    assert created.exit_code == 0, created.output
    assert f"modelbooster/{MODEL} created in namespace {e2e_namespace}" in created.output
    again = cli(kube, *ns, "create", "model", *template)
    assert again.exit_code == 1
    assert "already exists" in again.output
    eventually(lambda: active(kube, e2e_namespace), 180, f"{MODEL} Active")

    models = cli(kube, *ns, "get", "models")
    assert models.exit_code == 0, models.output
    assert row(models.output, "NAME") == ["NAME", "ACTIVE", "FAILED", "REPLICAS", "ENDPOINTS", "AGE"]
    assert row(models.output, MODEL)[1:5] == ["True", "-", "1/1", "1/1"]  # Failed is absent, not False

    servings = cli(kube, *ns, "get", "servings")
    serving_row = row(servings.output, SERVING)
    assert serving_row[1:4] == [MODEL, "1/1", "1"]
    assert serving_row[4].startswith("127.0."), serving_row
    assert serving_row[4].endswith(":8000"), serving_row

    routes = cli(kube, "get", "routes", *ns)  # options after the command, as kubectl takes them
    assert row(routes.output, MODEL)[1:4] == [MODEL, "-", SERVING]

    def described() -> str | None:
        done = cli(kube, "describe", "model", MODEL, *ns, "--traces", str(trace_file))  # as create's hint
        assert done.exit_code == 0, done.output
        return done.output if f"ModelServing {SERVING} created" in done.output else None

    # the applier writes its Events in the background (they yield to reconcile work): wait for one
    text = eventually(described, 60, f"the applier's Event in `ferry describe model {MODEL}`")
    for expected in (
        f"ModelBooster/{MODEL}", "Active=True", f"ModelServing/{SERVING}", f"ModelServer/{SERVING}",
        f"ModelRoute/{MODEL}", f"Pod/{SERVING}-0-leader-0-0", "Running  Ready", "endpoints", "events",
        "ModelServing qwen-cpu created",  # an Event the applier recorded on the booster
        "last reconcile trace", "ferry-watcher    watch modelboosters",
        "ferry-applier    applier reconcile",  # the trace that applied, not a later status echo
    ):  # fmt: skip
        assert expected in text, f"{expected!r} missing from:\n{text}"

    # Streaming through the router, with the installed `ferry` script.
    bin_dir = Path(sys.executable).parent
    chat = subprocess.run(
        [str(bin_dir / "ferry"), "chat", MODEL, "Where is Beijing?", "--max-tokens", "8"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, **kube.env, "FERRY_ROUTER_URL": ferry.router_url},
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip(), "no answer streamed"
    assert "chunks" in chat.stderr
    assert "completion tokens" in chat.stderr

    unknown = cli(kube, "chat", "no-such-model", "hi", "--router", ferry.router_url)
    assert unknown.exit_code == 1
    assert "model_not_found" in unknown.output, unknown.output


def test_errors_are_clear(kube: KubeEnv, e2e_namespace: str, tmp_path: Path) -> None:
    missing = cli(kube, "-n", e2e_namespace, "describe", "model", "nope")
    assert missing.exit_code == 1
    assert f'ModelBooster "nope" not found in namespace {e2e_namespace}' in missing.output

    no_config = cli(kube, "get", "models", KUBECONFIG=str(tmp_path / "absent"))
    assert no_config.exit_code == 1
    assert "does not exist" in no_config.output

    unreachable = cli(kube, "chat", MODEL, "hi", "--router", "http://127.0.0.1:1")
    assert unreachable.exit_code == 1
    assert "cannot reach the router" in unreachable.output

    for result in (missing, no_config, unreachable):
        assert "Traceback" not in result.output
