"""Kthena's converter unit-test cases (``spec/booster.md`` §5.2-§5.3) as table tests."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from ferry_converter.booster import envvars as E
from ferry_converter.booster.backends import backends_of
from ferry_converter.booster.command import device_count
from ferry_converter.booster.convert import convert_booster
from ferry_converter.booster.gofmt import go_float
from ferry_converter.booster.kvconnector import KvConnectorError, kv_connector_spec
from ferry_converter.booster.meta import BoosterRef
from ferry_converter.booster.options import RenderOptions
from ferry_converter.booster.storage import (
    CacheVolumeError,
    cache_path,
    cache_volume,
    mount_path,
    pvc_claim_name,
)
from ferry_converter.booster.workers import ConfigError, engine_args, engine_port
from ferry_local.paths import shared_dir
from ferry_schemas import labels as L

HEAD_INPUT = shared_dir() / "reference" / "kthena" / "head" / "convert-testdata" / "input"


def head(name: str) -> dict[str, Any]:
    return yaml.safe_load((HEAD_INPUT / name).read_text())


def children(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = convert_booster(obj)
    assert result.errors == [], [str(e) for e in result.errors]
    return {c["kind"]: c for c in result.children}


def serving(obj: dict[str, Any]) -> dict[str, Any]:
    return children(obj)["ModelServing"]


def errors(obj: dict[str, Any]) -> list[str]:
    result = convert_booster(obj)
    assert result.children == []
    return [str(e) for e in result.errors]


def roles(obj: dict[str, Any]) -> list[dict[str, Any]]:
    roles_: list[dict[str, Any]] = serving(obj)["spec"]["template"]["roles"]
    return roles_


def containers(role: dict[str, Any], template: str = "entryTemplate") -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in role[template]["spec"]["containers"]}


# --------------------------------------------------------------------------- ModelServing (§5.2)


@pytest.mark.parametrize(
    "source", ["model-with-runtimeclass.yaml", "pd-disaggregated-model-with-runtimeclass.yaml"]
)
def test_runtime_class_name_on_every_role(source: str) -> None:
    for role in roles(head(source)):
        assert role["entryTemplate"]["spec"]["runtimeClassName"] == "nvidia"
        if role["workerReplicas"] > 0:
            assert role["workerTemplate"]["spec"]["runtimeClassName"] == "nvidia"


def test_without_runtime_class_name_it_is_absent() -> None:
    assert "runtimeClassName" not in roles(head("model.yaml"))[0]["entryTemplate"]["spec"]


def test_vllm_affinity() -> None:
    role = roles(head("model-with-affinity.yaml"))[0]
    terms = role["entryTemplate"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert len(terms) == 1
    assert terms[0]["matchExpressions"][0]["key"] == "gpu-type"
    assert role["workerTemplate"]["spec"]["affinity"] == role["entryTemplate"]["spec"]["affinity"]


def test_pd_affinity_per_role() -> None:
    prefill, decode = roles(head("pd-disaggregated-model-with-affinity.yaml"))
    assert (prefill["name"], decode["name"]) == ("prefill", "decode")
    p_aff, d_aff = prefill["entryTemplate"]["spec"]["affinity"], decode["entryTemplate"]["spec"]["affinity"]
    node_term = "requiredDuringSchedulingIgnoredDuringExecution"
    assert p_aff["nodeAffinity"][node_term]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        "a100"
    ]
    assert "podAntiAffinity" not in p_aff
    assert d_aff["nodeAffinity"][node_term]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == [
        "h100"
    ]
    assert len(d_aff["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]) == 1


def test_without_affinity_renders_empty_affinity() -> None:
    role = roles(head("model.yaml"))[0]
    assert role["entryTemplate"]["spec"]["affinity"] == {}
    assert role["workerTemplate"]["spec"]["affinity"] == {}


def test_vllm_tolerations() -> None:
    role = roles(head("model-with-nodeselector-tolerations.yaml"))[0]
    want = [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"},
    ]
    assert role["entryTemplate"]["spec"]["tolerations"] == want
    assert "nodeSelector" not in role["entryTemplate"]["spec"]


def test_without_tolerations_they_are_absent() -> None:
    role = roles(head("model.yaml"))[0]
    assert "workerTemplate" in role
    assert "tolerations" not in role["entryTemplate"]["spec"]
    assert "tolerations" not in role["workerTemplate"]["spec"]


def test_pd_tolerations() -> None:
    prefill, decode = roles(head("pd-disaggregated-model-with-nodeselector-tolerations.yaml"))
    assert [t["key"] for t in prefill["entryTemplate"]["spec"]["tolerations"]] == ["nvidia.com/gpu"]
    second = decode["entryTemplate"]["spec"]["tolerations"][1]
    assert (second["key"], second["value"], second["effect"]) == (
        "dedicated",
        "inference",
        "PreferNoSchedule",
    )


def test_pods_omitted_gives_no_workers() -> None:
    (role,) = roles(head("model-with-pods-omitted.yaml"))
    assert role["workerReplicas"] == 0


@pytest.mark.parametrize(("pods", "workers", "ray"), [(0, 0, False), (1, 0, False), (3, 2, True)])
def test_pods_to_worker_replicas(pods: int, workers: int, ray: bool) -> None:
    obj = head("model.yaml")
    obj["spec"]["backend"]["workers"][0]["pods"] = pods
    (role,) = roles(obj)
    assert role["workerReplicas"] == workers
    command = " ".join(containers(role)["engine"]["command"])
    assert ("leader --ray_cluster_size=3" in command) is ray
    assert ("--distributed_executor_backend ray" in command) is ray


def test_prestop_handles_unavailable_metrics() -> None:
    (role,) = roles(head("model.yaml"))
    command = containers(role)["engine"]["lifecycle"]["preStop"]["exec"]["command"]
    assert len(command) == 3
    script = command[2]
    assert "curl -s --max-time 2 http://localhost:8000/metrics" in script
    assert 'if [ -z "$RUNNING" ]; then' in script
    assert "Metrics endpoint unavailable, exiting preStop" in script
    assert "$ERR" not in script
    assert script.endswith("done\n")


def test_custom_engine_port_aggregated() -> None:
    obj = head("model.yaml")
    obj["spec"]["backend"]["workers"][0]["config"] = {"port": 9000}
    (role,) = roles(obj)
    cs = containers(role)
    assert "http://localhost:9000" in cs["runtime"]["args"]
    assert "--port 9000" in " ".join(cs["engine"]["command"])
    assert cs["engine"]["readinessProbe"]["httpGet"]["port"] == 9000
    assert "http://localhost:9000/metrics" in cs["engine"]["lifecycle"]["preStop"]["exec"]["command"][2]
    assert children(obj)["ModelServer"]["spec"]["workloadPort"]["port"] == 9000


def test_custom_engine_port_disaggregated() -> None:
    obj = head("pd-disaggregated-model-npu.yaml")
    for worker in obj["spec"]["backend"]["workers"]:
        worker["config"]["port"] = 9000
    for role in roles(obj):
        cs = containers(role)
        assert "http://localhost:9000" in cs["runtime"]["args"]
        assert "--port" in cs["vllm"]["command"]
        assert "9000" in cs["vllm"]["command"]
        assert cs["vllm"]["ports"] == [{"containerPort": 9000}]
        assert cs["vllm"]["readinessProbe"]["httpGet"]["port"] == 9000
        assert cs["vllm"]["livenessProbe"]["httpGet"]["port"] == 9000


@pytest.mark.parametrize("connector", ["MooncakeConnector", "NixlConnector"])
def test_skip_engine_dependency_install(connector: str) -> None:
    obj = head("pd-disaggregated-model-mooncake.yaml")
    for worker in obj["spec"]["backend"]["workers"]:
        worker["config"]["kv-transfer-config"] = worker["config"]["kv-transfer-config"].replace(
            "MooncakeConnector", connector
        )
    installed = [" ".join(containers(r)["vllm"]["command"]) for r in roles(copy.deepcopy(obj))]
    assert all("pip install" in command for command in installed)
    obj["spec"]["backend"]["env"].append({"name": E.SKIP_ENGINE_DEPENDENCY_INSTALL, "value": "true"})
    for role in roles(obj):
        command = " ".join(containers(role)["vllm"]["command"])
        assert "pip install" not in command
        assert "mooncake-transfer-engine" not in command
        assert "nixl &&" not in command


def test_scheduler_name_serialisation() -> None:
    obj = head("model.yaml")
    assert '"schedulerName"' not in json.dumps(serving(obj))
    obj["spec"]["backend"]["schedulerName"] = "volcano"
    assert '"schedulerName": "volcano"' in json.dumps(serving(obj))


@pytest.mark.parametrize(
    ("uri", "volume"),
    [
        ("", {"name": "test-backend-weights", "emptyDir": {}}),
        (
            "pvc://test-pvc",
            {"name": "test-backend-weights", "persistentVolumeClaim": {"claimName": "test-pvc"}},
        ),
        (
            "pvc:///test-pvc",
            {"name": "test-backend-weights", "persistentVolumeClaim": {"claimName": "test-pvc"}},
        ),
        (
            "hostpath://test/path",
            {"name": "test-backend-weights", "hostPath": {"path": "/test/path", "type": "DirectoryOrCreate"}},
        ),
    ],
)
def test_build_cache_volume(uri: str, volume: dict[str, Any]) -> None:
    assert cache_volume("test-backend", uri) == volume


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("hostPath://invalid/path", "not support prefix in CacheURI: hostPath://invalid/path"),
        ("pvc://", "invalid cacheURI"),
    ],
)
def test_build_cache_volume_rejects(uri: str, message: str) -> None:
    with pytest.raises(CacheVolumeError, match=message):
        cache_volume("test-backend", uri)


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("models/llama-2-7b", "/8590cc9fef9361779a5bd7862eb82b6d"),
        ("", "/d41d8cd98f00b204e9800998ecf8427e"),
        ("model_@#$", "/1f8d57abec22d679835ba0c38f634b06"),
    ],
)
def test_mount_path(uri: str, path: str) -> None:
    assert mount_path(uri) == path


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("pvc://my-cache-path////", "/my-cache-path"),
        ("pvc:///my-cache-path", "/my-cache-path"),
        ("pvc:////my-cache-path", "/my-cache-path"),
        ("", ""),
        ("invalidpath", ""),
        ("pvc://path/with/multiple/separators", "/path/with/multiple/separators"),
        ("pvc://path/with://separator", "/path/with://separator"),
        ("hostpath:///tmp/test", "/tmp/test"),
        ("hostpath://cache", "/cache"),
        ("hostpath://mnt/cache/", "/mnt/cache"),
    ],
)
def test_cache_path(uri: str, path: str) -> None:
    assert cache_path(uri) == path


@pytest.mark.parametrize("uri", ["pvc://my-pvc", "pvc:///my-pvc", "pvc://my-pvc/", "pvc:////my-pvc////"])
def test_pvc_claim_name(uri: str) -> None:
    assert pvc_claim_name(uri) == "my-pvc"
    assert pvc_claim_name("") == ""


def test_model_download_paths_of_the_golden_inputs() -> None:
    (role,) = roles(head("model.yaml"))
    assert "/tmp/test/13a7c4d58031cdc502ca1bb4a592f2b9" in " ".join(containers(role)["engine"]["command"])
    prefill = roles(head("pd-disaggregated-model-npu.yaml"))[0]
    assert "/cache/568a486051fd302c338d84946c4f3d48" in containers(prefill)["vllm"]["command"]


# --------------------------------------------------------------------------- ModelServer (§5.2)


def test_model_server_invalid_backend_type() -> None:
    obj = head("model.yaml")
    obj["spec"]["backend"]["type"] = "InvalidType"
    (message,) = errors(obj)
    assert "not support model backend type: InvalidType" in message


def test_model_server_custom_port() -> None:
    obj = head("model.yaml")
    obj["spec"]["backend"]["workers"][0]["config"]["port"] = 9000
    assert children(obj)["ModelServer"]["spec"]["workloadPort"] == {"port": 9000}


def test_explicit_served_model_name_overrides_spec_name() -> None:
    obj = head("model.yaml")
    obj["spec"]["name"] = "something-else"
    assert children(obj)["ModelServer"]["spec"]["model"] == "deepseek-v3"


def _pd(prefill: Any, decode: Any) -> list[dict[str, Any]]:
    def worker(kind: str, kv: Any) -> dict[str, Any]:
        if kv is None:
            return {"type": kind}
        if isinstance(kv, dict) and "__config__" in kv:
            return {"type": kind, "config": kv["__config__"]}
        return {"type": kind, "config": {"kv-transfer-config": kv if isinstance(kv, str) else json.dumps(kv)}}

    return [worker("prefill", prefill), worker("decode", decode)]


def kv(connector: str | None, role: str | None) -> dict[str, str]:
    out = {}
    if connector is not None:
        out["kv_connector"] = connector
    if role is not None:
        out["kv_role"] = role
    return out


NIXL_P, NIXL_D = kv("NixlConnector", "kv_producer"), kv("NixlConnector", "kv_consumer")
MOON_P, MOON_D = kv("MooncakeConnector", "kv_producer"), kv("MooncakeConnector", "kv_consumer")

KV_CASES: list[tuple[str, list[dict[str, Any]], str | None]] = [
    ("server only", [{"type": "server"}], None),
    (
        "server with kv config",
        [{"type": "server", "config": {"kv-transfer-config": json.dumps(NIXL_P)}}],
        None,
    ),
    ("prefill+decode without kv", _pd(None, None), None),
    ("nixl", _pd(NIXL_P, NIXL_D), "nixl"),
    ("mooncake", _pd(MOON_P, MOON_D), "mooncake"),
    (
        "mooncake v1",
        _pd(kv("MooncakeConnectorV1", "kv_producer"), kv("MooncakeConnectorV1", "kv_consumer")),
        "mooncake",
    ),
    ("kv_both", _pd(kv("NixlConnector", "kv_both"), kv("NixlConnector", "kv_both")), "nixl"),
    ("decode first", list(reversed(_pd(NIXL_P, NIXL_D))), "nixl"),
    ("mooncake + mooncake v1", _pd(MOON_P, kv("MooncakeConnectorV1", "kv_consumer")), "mooncake"),
]

KV_ERRORS: list[tuple[str, list[dict[str, Any]], str]] = [
    (
        "2 prefill",
        [*_pd(NIXL_P, NIXL_D)[:1], _pd(MOON_P, None)[0], _pd(None, NIXL_D)[1]],
        "backend test-backend: found 2 prefill workers, expected at most 1",
    ),
    (
        "2 prefill reversed",
        [_pd(MOON_P, None)[0], *_pd(NIXL_P, NIXL_D)],
        "backend test-backend: found 2 prefill workers, expected at most 1",
    ),
    ("2 decode", [*_pd(NIXL_P, NIXL_D), _pd(None, MOON_D)[1]], "found 2 decode workers, expected at most 1"),
    (
        "2 decode reversed",
        [_pd(None, MOON_D)[1], *_pd(NIXL_P, NIXL_D)],
        "found 2 decode workers, expected at most 1",
    ),
    ("2 identical prefill", [*_pd(NIXL_P, NIXL_D), _pd(NIXL_P, None)[0]], "found 2 prefill workers"),
    (
        "mismatch",
        _pd(NIXL_P, MOON_D),
        'kv_connector mismatch between prefill ("NixlConnector") and decode ("MooncakeConnector")',
    ),
    (
        "mismatch reversed",
        _pd(MOON_P, NIXL_D),
        'kv_connector mismatch between prefill ("MooncakeConnector") and decode ("NixlConnector")',
    ),
    ("prefill only", _pd(NIXL_P, None), "decode worker has no kv-transfer-config"),
    ("decode only", _pd(None, NIXL_D), "prefill worker has no kv-transfer-config"),
    (
        "prefill without config",
        _pd({"__config__": {"max-model-len": 1}}, NIXL_D),
        "prefill worker has no kv-transfer-config",
    ),
    ("decode without config", _pd(NIXL_P, {"__config__": {}}), "decode worker has no kv-transfer-config"),
    (
        "no connector",
        _pd(kv(None, "kv_producer"), NIXL_D),
        "worker prefill: kv-transfer-config is set but kv_connector is missing",
    ),
    (
        "unknown connector",
        _pd(kv("UnknownConnector", "kv_producer"), NIXL_D),
        'worker prefill: unsupported kv_connector "UnknownConnector"',
    ),
    (
        "prefill consumer",
        _pd(kv("NixlConnector", "kv_consumer"), NIXL_D),
        'worker prefill: invalid kv_role "kv_consumer", expected one of [kv_producer, kv_both]',
    ),
    (
        "decode producer",
        _pd(NIXL_P, kv("NixlConnector", "kv_producer")),
        'worker decode: invalid kv_role "kv_producer", expected one of [kv_consumer, kv_both]',
    ),
    (
        "roles reversed",
        _pd(kv("NixlConnector", "kv_consumer"), kv("NixlConnector", "kv_producer")),
        'worker prefill: invalid kv_role "kv_consumer"',
    ),
    ("nested {", _pd("{", NIXL_D), "worker prefill: invalid kv-transfer-config"),
    ("config not an object", _pd({"__config__": "{"}, NIXL_D), "worker prefill: invalid config"),
    (
        "no role",
        _pd(kv("NixlConnector", None), NIXL_D),
        "worker prefill: kv-transfer-config is set but kv_role is missing",
    ),
    (
        "not a string",
        _pd({"__config__": {"kv-transfer-config": {"kv_connector": "NixlConnector"}}}, NIXL_D),
        "worker prefill: kv-transfer-config must be a JSON string, got map[string]interface {}",
    ),
]


@pytest.mark.parametrize(("case", "workers", "kind"), KV_CASES, ids=[c[0] for c in KV_CASES])
def test_kv_connector_spec(case: str, workers: list[dict[str, Any]], kind: str | None) -> None:
    spec = kv_connector_spec("test-backend", workers)
    assert (spec["type"] if spec else None) == kind


@pytest.mark.parametrize(("case", "workers", "message"), KV_ERRORS, ids=[c[0] for c in KV_ERRORS])
def test_kv_connector_spec_errors(case: str, workers: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(KvConnectorError) as caught:
        kv_connector_spec("test-backend", workers)
    assert message in str(caught.value)


def test_pd_backend_with_mismatched_connectors_fails_conversion() -> None:
    obj = head("pd-disaggregated-model-mooncake.yaml")
    obj["spec"]["backend"]["workers"][1]["config"]["kv-transfer-config"] = json.dumps(NIXL_D)
    (message,) = errors(obj)
    assert message.startswith("spec.backend.workers: invalid kv connector configuration: ")
    assert "kv_connector mismatch" in message


# --------------------------------------------------------------------------- ModelRoute (§5.2)


def test_route_uses_spec_name() -> None:
    obj = head("model.yaml")
    obj["metadata"]["name"] = "qwen25"
    obj["spec"]["name"] = "qwen25-coder-32b"
    assert children(obj)["ModelRoute"]["spec"]["modelName"] == "qwen25-coder-32b"


def test_route_uses_metadata_name_without_spec_name() -> None:
    obj = head("model.yaml")
    obj["metadata"]["name"] = "qwen25"
    assert children(obj)["ModelRoute"]["spec"]["modelName"] == "qwen25"


# --------------------------------------------------------------------------- utils tables (§5.3)

ARGS_CASES: list[tuple[Any, list[str]]] = [
    (None, []),
    ({}, []),
    ({"model": "deepseek-r1"}, ["--model", "deepseek-r1"]),
    ({"trust_remote_code": True}, ["--trust-remote-code", "true"]),
    ({"trust_remote_code": False}, ["--trust-remote-code", "false"]),
    ({"model": "deepseek", "dtype": "float16"}, ["--dtype", "float16", "--model", "deepseek"]),
    ({"max_model_len": 4096}, ["--max-model-len", "4096"]),
    ({"trust-remote-code": ""}, ["--trust-remote-code"]),
    ({"max-num-batched-tokens": 1000000}, ["--max-num-batched-tokens", "1e+06"]),
    ({"x": 1048576}, ["--x", "1.048576e+06"]),
    ({"x": 0.9}, ["--x", "0.9"]),
    ({"x": None}, ["--x", "<nil>"]),
    ({"x": {"b": 1, "a": "s"}}, ["--x", "map[a:s b:1]"]),
    ({"x": [1, "a", True]}, ["--x", "[1 a true]"]),
    ({"kv-transfer-config": '{"a":1}'}, ["--kv-transfer-config", '{"a":1}']),
]


@pytest.mark.parametrize(("config", "args"), ARGS_CASES)
def test_engine_args(config: Any, args: list[str]) -> None:
    assert engine_args(config) == args


def test_engine_args_invalid_config() -> None:
    with pytest.raises(ConfigError, match="failed to unmarshal config"):
        engine_args("{not json")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (128, "128"),
        (32768, "32768"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (999999, "999999"),
        (1.5e300, "1.5e+300"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


def test_backend_resource_name() -> None:
    assert L.booster_child_name("my-model", "vllm") == "my-model-vllm"
    assert L.booster_child_name("my-model", "") == "my-model"


def test_model_controller_labels() -> None:
    ref = BoosterRef(name="m", namespace="ns", uid="u")
    assert ref.labels("b") == {
        "workload.serving.volcano.sh/model-name": "m",
        "workload.serving.volcano.sh/backend-name": "b",
        "workload.serving.volcano.sh/managed-by": "workload.serving.volcano.sh",
        "workload.serving.volcano.sh/model-uid": "u",
    }
    labels = children(head("model.yaml"))["ModelServing"]["metadata"]["labels"]
    assert set(labels) == {*ref.labels("b"), L.BOOSTER_REVISION}


def test_owner_reference() -> None:
    ref = BoosterRef(name="m", namespace="ns", uid="u").owner_reference()
    assert ref == {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "name": "m",
        "uid": "u",
        "controller": True,
        "blockOwnerDeletion": True,
    }


PORT_CASES: list[tuple[str, list[dict[str, Any]], int | str]] = [
    ("no config", [{"type": "server"}], 8000),
    ("int", [{"type": "server", "config": {"port": 9000}}], 9000),
    ("string", [{"type": "server", "config": {"port": "9000"}}], 9000),
    ("null", [{"type": "server", "config": {"port": None}}], 'invalid port "<nil>" for worker server'),
    ("fraction", [{"type": "server", "config": {"port": 9000.5}}], 'invalid port "9000.5" for worker server'),
    (
        "out of range",
        [{"type": "server", "config": {"port": 70000}}],
        'invalid port "70000" for worker server',
    ),
    (
        "disagree",
        [{"type": "prefill", "config": {"port": 9000}}, {"type": "decode"}],
        "workers use different engine ports: 9000 and 8000",
    ),
    ("not an object", [{"type": "server", "config": [1]}], "failed to get port for worker server"),
    ("no considered worker", [{"type": "controller", "config": {"port": 1}}], 8000),
]


@pytest.mark.parametrize(("case", "workers", "want"), PORT_CASES, ids=[c[0] for c in PORT_CASES])
def test_engine_port(case: str, workers: list[dict[str, Any]], want: int | str) -> None:
    if isinstance(want, int):
        assert engine_port(workers) == want
    else:
        with pytest.raises(ConfigError, match=want.replace("[", r"\[")):
            engine_port(workers)


@pytest.mark.parametrize(
    ("limits", "count"),
    [
        ({"nvidia.com/gpu": "2"}, 2),
        ({"huawei.com/ascend-1980": "4"}, 4),
        ({"nvidia.com/gpu": "2", "huawei.com/ascend-1980": "2"}, 4),
        ({}, 0),
        ({"cpu": "4", "memory": "1Gi"}, 0),
        ({"nvidia.com/gpu": "1500m"}, 2),
    ],
)
def test_device_count(limits: dict[str, str], count: int) -> None:
    assert device_count({"resources": {"limits": limits}}) == count


ENV = [
    {"name": "S", "value": "text"},
    {"name": "I", "value": "42"},
    {"name": "BAD", "value": "4x"},
    {"name": "B", "value": "true"},
    {"name": "E", "value": ""},
    {"name": "R", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
]


@pytest.mark.parametrize(
    ("read", "want"),
    [
        (lambda: E.env_str(ENV, "S", "d"), "text"),
        (lambda: E.env_str(ENV, "missing", "d"), "d"),
        (lambda: E.env_str(ENV, "E", "d"), ""),
        (lambda: E.env_int(ENV, "I", 100), 42),
        (lambda: E.env_int(ENV, "BAD", 100), 100),
        (lambda: E.env_int(ENV, "missing", 100), 100),
        (lambda: E.env_int(ENV, "R", 100), 100),
        (lambda: E.env_bool(ENV, "B", False), True),
        (lambda: E.env_bool(ENV, "BAD", True), True),
        (lambda: E.env_bool(ENV, "missing", False), False),
    ],
)
def test_env_value_or_default(read: Any, want: Any) -> None:
    assert read() == want


def test_downloader_env_only_non_empty_known_names() -> None:
    env = [
        {"name": "HF_ENDPOINT", "value": ""},
        {"name": "ENDPOINT", "value": "e"},
        {"name": "MS_TOKEN", "value": "t"},
    ]
    assert E.downloader_env(env) == [{"name": "ENDPOINT", "value": "e"}, {"name": "MS_TOKEN", "value": "t"}]


def test_default_images_and_overrides() -> None:
    assert RenderOptions().downloader_image == "kthena/downloader:latest"
    assert RenderOptions().runtime_image == "kthena/runtime:latest"
    obj = head("model.yaml")
    custom = RenderOptions(downloader_image="d:1", runtime_image="r:1")
    ms = next(c for c in convert_booster(obj, custom).children if c["kind"] == "ModelServing")
    spec = ms["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]
    assert spec["initContainers"][0]["image"] == "d:1"
    assert spec["containers"][0]["image"] == "r:1"
    assert "command" not in spec["containers"][0]  # Kthena's container: the image's entrypoint


def test_ferry_runtime_sidecar_takes_kthenas_place_and_flags() -> None:
    ferry = RenderOptions(runtime_image="ferry:1", runtime_command=("ferry-runtime",))
    ms = next(c for c in convert_booster(head("model.yaml"), ferry).children if c["kind"] == "ModelServing")
    runtime = ms["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["containers"][0]
    assert (runtime["image"], runtime["command"]) == ("ferry:1", ["ferry-runtime"])
    kthena = next(c for c in convert_booster(head("model.yaml")).children if c["kind"] == "ModelServing")
    kthena_runtime = kthena["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["containers"][0]
    assert runtime["args"] == kthena_runtime["args"]  # the same flags: ferry-runtime reads Kthena's


def test_user_placeholders_are_not_templated() -> None:
    """Kthena re-interprets ``${…}`` in user strings as template placeholders (error or substitution).

    Ferry renders objects directly, so such strings pass through unchanged (ReplaceEmbeddedPlaceholders
    cases in Kthena exercise the template engine Ferry does not have).
    """
    obj = head("model.yaml")
    obj["spec"]["backend"]["env"].append({"name": "GREETING", "value": "hello ${name} ${ENGINE_PORT}"})
    (role,) = roles(obj)
    env = {e["name"]: e.get("value") for e in containers(role)["engine"]["env"]}
    assert env["GREETING"] == "hello ${name} ${ENGINE_PORT}"


def test_backends_superset_requires_exactly_one_form() -> None:
    from ferry_converter.errors import ConversionFailure

    with pytest.raises(ConversionFailure, match="not both"):
        backends_of({"backend": {}, "backends": [{}]})
    with pytest.raises(ConversionFailure, match=r"needs spec\.backend"):
        backends_of({})


@pytest.mark.parametrize(
    ("backend", "bounds"),
    [
        ({"replicas": 0}, (0, 1)),
        ({"replicas": 3}, (3, 3)),
        ({"minReplicas": 1, "maxReplicas": 4}, (1, 4)),
        ({"minReplicas": 2}, (2, 2)),
    ],
)
def test_autoscaling_replica_bounds(backend: dict[str, int], bounds: tuple[int, int]) -> None:
    """Found by the properties: ``replicas: 0`` with a policy must still give a valid ``maxReplicas``."""
    obj = head("model.yaml")
    obj["spec"]["backend"].pop("replicas")
    obj["spec"]["backend"].update(backend)
    obj["spec"]["autoscalingPolicy"] = {"metrics": [{"metricName": "m", "targetValue": 10}]}
    binding = children(obj)["AutoscalingPolicyBinding"]
    target = binding["spec"]["homogeneousTarget"]
    assert (target["minReplicas"], target["maxReplicas"]) == bounds
    assert binding["metadata"]["name"] == "test-model"
    assert binding["spec"]["policyRef"] == {"name": "test-model"}
