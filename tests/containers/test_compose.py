"""docker compose for real: `up` of docker-compose.yml on the container engine brings up NATS, etcd,
kube-apiserver, kube-controller-manager, the CRDs, every Ferry service, the local node, the OTel
collector and Jaeger; a booster applied with kubectl becomes Active, a chat through the router's
published port is answered, the reconcile's trace is readable from Jaeger's API, and `down` leaves
nothing running."""

from __future__ import annotations

import json
import tempfile
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from ferry_local.binaries import kubernetes_bin_dir
from ferry_local.paths import repo_root, state_dir
from ferry_local.readiness import free_port
from openai import OpenAI

from tests.conftest import KubeEnv
from tests.support.containers import Compose, ContainerEngine
from tests.support.polling import eventually, has_condition

pytestmark = [pytest.mark.e2e, pytest.mark.containers]

DEMO = repo_root() / "deploy" / "local" / "demo"
FERRY_SERVICES = {"ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status"}
BOOSTER_CONVERSION = "converter convert ferry.obj.modelboosters."


def _json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _project_containers(engine: ContainerEngine, project: str) -> list[str]:
    import docker

    client = docker.DockerClient(base_url=engine.env.get("DOCKER_HOST") or None, timeout=30)
    found = client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    return [c.name for c in found]


def _reconcile_trace(jaeger: str) -> dict[str, Any] | None:
    """The trace in which the booster was converted, once it reaches the applier and status services.

    Picked by its conversion span, not by its root: the watcher may report the new booster as ADDED or
    SYNC, and later traces reach every service without a reconcile (the booster's own status write
    coming back, which each service looks at and drops)."""
    found = _json(f"{jaeger}/api/traces?service=ferry-watcher&limit=200&lookback=1h")
    for trace in found.get("data") or []:
        names = {span["operationName"] for span in trace["spans"]}
        services = {p["serviceName"] for p in trace["processes"].values()}
        if any(name.startswith(BOOSTER_CONVERSION) for name in names) and services >= FERRY_SERVICES:
            return dict(trace)
    return None


def _conversion_traces(jaeger: str) -> list[list[str]]:
    """Each trace with a booster-conversion span: the services it reached (what a failure shows)."""
    try:
        found = _json(f"{jaeger}/api/traces?service=ferry-watcher&limit=200&lookback=1h")
    except OSError as exc:
        return [[f"Jaeger not answering: {exc}"]]
    return [
        sorted({p["serviceName"] for p in trace["processes"].values()})
        for trace in found.get("data") or []
        if any(span["operationName"].startswith(BOOSTER_CONVERSION) for span in trace["spans"])
    ]


@pytest.mark.timeout(1200)
def test_compose_up_serves_a_booster_and_traces_it(engine: ContainerEngine, engine_compose: Compose) -> None:
    project = f"ferry-e2e-{uuid.uuid4().hex[:6]}"
    state = Path(tempfile.mkdtemp(prefix="compose-", dir=state_dir()))
    names = ("FERRY_APISERVER_PORT", "FERRY_ROUTER_PORT", "FERRY_JAEGER_PORT", "FERRY_NATS_PORT")
    ports = {key: str(free_port()) for key in names}
    compose = Compose(
        engine_compose.argv,
        {**engine_compose.env, **ports, "FERRY_COMPOSE_STATE": str(state), "COMPOSE_PROJECT_NAME": project},
    )
    env_file = ["--env-file", str(engine.images_env)] if engine.images_env else []
    try:
        up = compose.run(*env_file, "up", "--detach", *([] if engine.podman else ["--build"]), timeout=1200)
        assert up.returncode == 0, f"docker compose up failed:\n{up.stdout}\n{up.stderr}"
        kube = KubeEnv(kubeconfig=state / "kubeconfig", kubectl=kubernetes_bin_dir() / "kubectl",
                       server=f"https://127.0.0.1:{ports['FERRY_APISERVER_PORT']}")  # fmt: skip
        eventually(
            lambda: kube.kubectl_run("get", "crd", "modelboosters.workload.serving.volcano.sh", check=False)
            .returncode == 0,
            "the CRDs installed by the bootstrap one-shot", timeout=120,
        )  # fmt: skip
        kube.kubectl_run(
            "apply", "-f", str(DEMO / "00-namespace.yaml"), "-f", str(DEMO / "10-quickstart.yaml")
        )

        def active() -> bool:
            booster = json.loads(kube.kubectl_run("-n", "ferry-demo", "get", "modelbooster", "qwen", "-o",
                                                  "json").stdout)  # fmt: skip
            return has_condition(booster, "Active")

        try:
            eventually(active, "the booster to become Active under compose", timeout=420)
        except BaseException:
            what = "modelbooster,modelserving,pods"
            shown = kube.kubectl_run("-n", "ferry-demo", "get", what, "-o", "wide", check=False)
            print(f"compose stack when the booster was not Active:\n{shown.stdout}{shown.stderr}")
            print(compose.run(*env_file, "logs", "--tail", "30", timeout=120).stdout[-20000:])
            raise

        client = OpenAI(base_url=f"http://127.0.0.1:{ports['FERRY_ROUTER_PORT']}/v1", api_key="compose",
                        timeout=30, max_retries=0)  # fmt: skip

        def answered() -> str | None:
            try:
                reply = client.chat.completions.create(
                    model="qwen", messages=[{"role": "user", "content": "hello from compose"}], max_tokens=8
                )
            except Exception:  # the router may not see the new endpoint yet
                return None
            return reply.choices[0].message.content

        text = eventually(answered, "a chat answered through the router's published port", timeout=120)
        assert text

        jaeger = f"http://127.0.0.1:{ports['FERRY_JAEGER_PORT']}"
        try:
            trace = eventually(lambda: _reconcile_trace(jaeger), "a reconcile trace in Jaeger", timeout=120)
        except BaseException:
            print(f"conversion traces in Jaeger, by the services each reached: {_conversion_traces(jaeger)}")
            logs = compose.run(*env_file, "logs", "--timestamps", "status", "applier", timeout=120)
            print(logs.stdout[-20000:])
            raise
        names = {span["operationName"] for span in trace["spans"]}
        assert "applier reconcile" in names, names
    finally:
        down = compose.run(*env_file, "down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=600)
        left = _project_containers(engine, project)
    assert down.returncode == 0, f"docker compose down failed:\n{down.stderr}"
    assert left == [], f"containers left after down: {left}"
