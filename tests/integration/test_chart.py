"""The Helm chart (``deploy/helm/ferry``): generated from ``deploy/`` and up to date, renders the same
objects as kustomize, passes ``helm lint``, and its ``helm template`` output — with every optional
part switched on — is accepted by a server-side dry run on the real local API server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_local.binaries import fetched_crds, go_tools_bin_dir
from ferry_local.chart import CHART_LABELS, chart_dir, differences, generate, kustomize
from ferry_local.paths import repo_root

from tests.conftest import KubeEnv, fresh_namespace

pytestmark = [pytest.mark.integration]

CHART = chart_dir()
MONITORING_ON = (
    "--set", "monitoring.serviceMonitors.enabled=true", "--set", "monitoring.podMonitors.enabled=true",
    "--set", "monitoring.prometheusRule.enabled=true", "--set", "monitoring.grafanaDashboard.enabled=true",
)  # fmt: skip
Obj = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> Path:
    return go_tools_bin_dir() / "helm"


def run(*argv: str | Path, input: str | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, input=input, timeout=120)
    assert done.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{done.stderr}"
    return done.stdout


def template(helm: Path, namespace: str, *sets: str) -> list[Obj]:
    args: list[str | Path] = [helm, "template", "ferry", CHART, "--namespace", namespace, "--include-crds"]
    for value in sets:
        args += ["--set", value]
    return [d for d in yaml.safe_load_all(run(*args)) if d]


def key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def without_chart_metadata(obj: Obj) -> Obj:
    """Drop what the chart adds and the API server would default anyway."""
    labels = obj["metadata"].get("labels") or {}
    for name in CHART_LABELS:
        labels.pop(name, None)
    if not labels:
        obj["metadata"].pop("labels", None)
    for containers in _containers(obj):
        for container in containers:
            if container.get("imagePullPolicy") == "IfNotPresent":  # the default for a tagged image
                del container["imagePullPolicy"]
    return obj


def _containers(obj: Obj) -> Iterator[list[Obj]]:
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    for field in ("containers", "initContainers"):
        if field in pod:
            yield pod[field]


def test_chart_is_generated_from_deploy_and_up_to_date() -> None:
    diffs = differences(generate(repo_root() / "deploy"), CHART)
    assert not diffs, "deploy/helm/ferry is out of date — run `make chart`:\n" + "\n".join(diffs)


def test_default_values_render_exactly_what_kustomize_renders(helm: Path) -> None:
    from_kustomize = {key(o): o for o in kustomize(repo_root() / "deploy")}
    from_chart = {
        key(o): without_chart_metadata(o) for o in template(helm, "ferry-system", "namespace.create=true")
    }
    assert set(from_chart) == set(from_kustomize)
    for name, obj in from_kustomize.items():
        assert from_chart[name] == obj, f"{name} differs between the chart and kustomize"


def test_values_reach_the_objects(helm: Path) -> None:
    objects = {key(o): o for o in template(
        helm, "ml-serving",
        "image.repository=registry.example/ferry", "image.tag=1.2.3", "image.pullPolicy=Always",
        "watcher.replicas=3", "router.service.type=LoadBalancer", "router.hpa.maxReplicas=20",
        "otel.endpoint=http://collector:4317", "router.gatewayAPI.enabled=true",
        "nats.enabled=false", "nats.url=nats://nats.shared.svc:4222", "podGroupCRD.install=false",
        "router.pdb.enabled=false",
    )}  # fmt: skip
    watcher = objects["Deployment", "ferry-watcher"]
    (container,) = watcher["spec"]["template"]["spec"]["containers"]
    assert watcher["metadata"]["namespace"] == "ml-serving"
    assert watcher["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/ferry:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert objects["Service", "ferry-router"]["spec"]["type"] == "LoadBalancer"
    assert objects["HorizontalPodAutoscaler", "ferry-router"]["spec"]["maxReplicas"] == 20
    env = objects["ConfigMap", "ferry-env"]["data"]
    assert env["FERRY_NATS_URL"] == "nats://nats.shared.svc:4222"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4317"
    assert env["FERRY_GATEWAY_API"] == "true"
    binding = objects["ClusterRoleBinding", "ferry-applier"]
    assert binding["subjects"][0]["namespace"] == "ml-serving"
    assert not [k for k in objects if k[0] == "StatefulSet" or k[1].startswith("nats")]
    assert ("CustomResourceDefinition", "podgroups.scheduling.volcano.sh") not in objects
    assert ("PodDisruptionBudget", "ferry-router") not in objects
    assert ("CustomResourceDefinition", "modelboosters.workload.serving.volcano.sh") in objects


def test_helm_lint(helm: Path) -> None:
    out = run(helm, "lint", "--strict", CHART)
    assert "0 chart(s) failed" in out
    with_monitoring = run(helm, "lint", "--strict", CHART, *MONITORING_ON)
    assert "0 chart(s) failed" in with_monitoring


def test_external_nats_without_a_url_is_refused(helm: Path) -> None:
    failing = subprocess.run(
        [str(helm), "template", "ferry", str(CHART), "--set", "nats.enabled=false"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert failing.returncode != 0
    assert "nats.enabled=false needs nats.url" in failing.stdout + failing.stderr


def test_helm_template_is_accepted_by_a_server_side_dry_run(helm: Path, kube: KubeEnv) -> None:
    """Every optional part on (monitoring, gateway mode), against the real Prometheus Operator CRDs."""
    crds = fetched_crds("prometheus-operator")
    kube.kubectl_run("apply", "--server-side", "-f", str(crds), timeout=120)
    kube.kubectl_run("wait", "--for", "condition=Established", "--timeout", "60s", "-f", str(crds))
    with fresh_namespace(kube, "chart") as namespace:
        on = [value for value in MONITORING_ON if value != "--set"] + ["router.gatewayAPI.enabled=true"]
        docs = template(helm, namespace, *on)
        assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= {d["kind"] for d in docs}
        rendered = "\n---\n".join(yaml.safe_dump(d) for d in docs)
        done = kube.kubectl_run("apply", "--dry-run=server", "-f", "-", input=rendered, timeout=180)
        accepted = {
            (line.split(" ")[0].split("/")[0].split(".")[0], line.split(" ")[0].split("/")[1])
            for line in done.stdout.splitlines()
            if line.endswith("(server dry run)")
        }
        assert accepted == {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}, done.stdout
