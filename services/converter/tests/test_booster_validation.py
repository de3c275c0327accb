"""Kthena's webhook cases (``spec/booster.md`` §5.4) and inputs that pass the CRD but cannot convert.

The converter re-checks every admission rule, so each case here is a ConversionError value with
the field path and Kthena's message, and no children at all.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from ferry_converter.booster.convert import convert_booster
from ferry_converter.booster.validate import cache_volume_mount_path, image_error, pvc_model_source_path
from ferry_local.paths import shared_dir
from ferry_schemas.bus import ConversionError

HEAD_INPUT = shared_dir() / "reference" / "kthena" / "head" / "convert-testdata" / "input"


def booster(backend: dict[str, Any], name: str = "test-model") -> dict[str, Any]:
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelBooster",
        "metadata": {"name": name, "namespace": "default", "uid": "uid-1"},
        "spec": {"backend": backend},
    }


def vllm(**extra: Any) -> dict[str, Any]:
    backend: dict[str, Any] = {
        "name": "backend1",
        "type": "vLLM",
        "modelURI": "hf://Qwen/Qwen2.5-0.5B-Instruct",
        "cacheURI": "hostpath:///tmp/cache",
        "replicas": 1,
        "workers": [{"type": "server", "image": "test-image:latest", "pods": 1, "replicas": 1}],
    }
    backend.update(extra)
    return backend


def pd(prefill_config: Any = None, decode_config: Any = None) -> dict[str, Any]:
    prefill: dict[str, Any] = {"type": "prefill", "image": "vllm:latest", "replicas": 1}
    decode: dict[str, Any] = {"type": "decode", "image": "vllm:latest", "replicas": 1}
    if prefill_config is not None:
        prefill["config"] = prefill_config
    if decode_config is not None:
        decode["config"] = decode_config
    return vllm(type="vLLMDisaggregated", workers=[prefill, decode])


def failures(obj: dict[str, Any]) -> list[ConversionError]:
    result = convert_booster(obj)
    assert result.children == [], "a failed conversion must not produce children"
    assert result.errors, "expected the conversion to fail"
    return result.errors


def ok(obj: dict[str, Any]) -> None:
    result = convert_booster(obj)
    assert result.errors == [], [str(e) for e in result.errors]


def test_no_errors() -> None:
    ok(booster(vllm()))


def test_replica_bound() -> None:
    (error,) = failures(booster(vllm(replicas=1_000_001)))
    assert error.field == "spec.backend.replicas"
    assert "replicas (1000001) cannot exceed 1000000" in error.message


@pytest.mark.parametrize("image", ["test-image:latest ", "test\timage", "test-image:latest\n", "a b"])
def test_worker_image_whitespace(image: str) -> None:
    backend = vllm()
    backend["workers"][0]["image"] = image
    (error,) = failures(booster(backend))
    assert error.field == "spec.backend.workers[0].image"
    assert "image cannot contain whitespace" in error.message


@pytest.mark.parametrize(
    ("image", "valid"),
    [
        ("nginx", True),
        ("nginx:latest", True),
        ("docker.io/library/nginx:1.19", True),
        ("", True),
        ("   ", False),
        ("nginx ", False),
        ("ng inx", False),
        ("nginx\t", False),
        ("nginx\n", False),
    ],
)
def test_validate_image_field(image: str, valid: bool) -> None:
    assert (image_error(image) is None) is valid


def test_whitespace_only_image() -> None:
    assert image_error("   ") == "invalid container image reference: image cannot be empty or whitespace only"


def test_vllm_needs_exactly_one_server_worker() -> None:
    two = vllm()
    two["workers"].append({"type": "server", "image": "x"})
    (error,) = failures(booster(two))
    assert (error.field, error.message) == (
        "spec.backend.workers",
        "If backend type is 'vLLM', there must be exactly one worker",
    )
    wrong = vllm()
    wrong["workers"][0]["type"] = "prefill"
    (error,) = failures(booster(wrong))
    assert error.field == "spec.backend.workers[0].type"
    assert error.message == "If backend type is 'vLLM', the worker type must be 'server'"


def test_pd_worker_types() -> None:
    backend = pd()
    backend["workers"].append({"type": "server"})
    errors = failures(booster(backend))
    assert errors[0].field == "spec.backend.workers[2].type"
    assert "all workers must be type 'prefill' or 'decode'" in errors[0].message


@pytest.mark.parametrize(
    ("prefill", "decode", "error"),
    [
        ({"port": 9000}, {"port": 9000}, None),
        ({"port": "9000"}, {"port": "9000"}, None),
        ({"port": None}, {"port": 8000}, ("spec.backend.workers[0].config.port", "invalid port")),
        (
            {"port": 9000},
            {"port": 8000},
            ("spec.backend.workers[1].config.port", "workers use different engine ports"),
        ),
    ],
)
def test_engine_ports(prefill: Any, decode: Any, error: tuple[str, str] | None) -> None:
    obj = booster(pd(prefill, decode))
    if error is None:
        ok(obj)
        return
    (found,) = failures(obj)
    assert found.field == error[0]
    assert error[1] in found.message
    assert "vllm:latest" not in found.message


PVC_VALID = [
    ("hf://Qwen/Qwen2.5", "pvc://my-pvc"),
    ("hf://Qwen/Qwen2.5", "hostpath:///tmp/cache"),
    ("pvc:///crater-storage/models/Qwen", "pvc://crater-storage"),
    ("pvc://crater-storage/models/Qwen", "pvc://crater-storage"),
    ("pvc://my-pvc", "pvc://my-pvc"),
    ("pvc://crater-storage/models/Qwen/", "pvc://crater-storage"),
    ("pvc://crater-storage/models/Qwen", "pvc://crater-storage/"),
    ("pvc://crater-storage//models//Qwen", "pvc://crater-storage"),
    ("s3://bucket/model", "hostpath:///tmp/cache"),
    ("obs://bucket/model", "hostpath:///tmp/cache"),
    ("ms://Qwen/Qwen2.5", "hostpath:///tmp/cache"),
]
PVC_INVALID = [
    (
        "pvc://crater-storage/models",
        "hostpath:///tmp/cache",
        "when modelURI uses pvc://, cacheURI must also use pvc://",
    ),
    ("pvc://crater-storage/models", "", "when modelURI uses pvc://, cacheURI must also use pvc://"),
    ("pvc:///different-pvc/models/Qwen", "pvc://crater-storage", "is not reachable via cacheURI mount"),
    (
        "pvc:///crater-storage/../other-pvc/models",
        "pvc://crater-storage",
        "must not contain '..' path segments",
    ),
    ("pvc://../other/models", "pvc://crater-storage", "must not contain '..' path segments"),
    ("pvc://crater-storage/models", "pvc://", "must contain a single PVC claim name with no path separator"),
    ("pvc://foo/bar/models", "pvc://foo/bar", "claim names cannot contain '/'"),
    ("pvc:///foobar/models", "pvc://foo", "is not reachable via cacheURI mount"),
]


@pytest.mark.parametrize(("model_uri", "cache_uri"), PVC_VALID)
def test_pvc_uri_compatibility_valid(model_uri: str, cache_uri: str) -> None:
    ok(booster(vllm(modelURI=model_uri, cacheURI=cache_uri)))


@pytest.mark.parametrize(("model_uri", "cache_uri", "message"), PVC_INVALID)
def test_pvc_uri_compatibility_invalid(model_uri: str, cache_uri: str, message: str) -> None:
    errors = failures(booster(vllm(modelURI=model_uri, cacheURI=cache_uri)))
    assert any(message in e.message for e in errors), [str(e) for e in errors]


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("pvc:///crater-storage/models/Qwen", "/crater-storage/models/Qwen"),
        ("pvc://crater-storage/models/Qwen", "/crater-storage/models/Qwen"),
        ("pvc://my-pvc", "/my-pvc"),
        ("pvc:///my-pvc", "/my-pvc"),
    ],
)
def test_pvc_model_source_path(uri: str, path: str) -> None:
    assert pvc_model_source_path(uri) == path


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("pvc://crater-storage", "/crater-storage"),
        ("pvc:///crater-storage", "/crater-storage"),
        ("hostpath:///tmp/cache", "/tmp/cache"),
        ("hostpath://tmp/cache", "/tmp/cache"),
        ("", ""),
        ("invalid", ""),
    ],
)
def test_cache_volume_mount_path(uri: str, path: str) -> None:
    assert cache_volume_mount_path(uri) == path


NIXL = '{"kv_connector":"NixlConnector","kv_role":"kv_%s"}'
MOON = '{"kv_connector":"MooncakeConnector","kv_role":"kv_%s"}'


@pytest.mark.parametrize(
    ("prefill", "decode", "message"),
    [
        (NIXL % "producer", MOON % "consumer", "kv_connector mismatch between prefill"),
        (MOON % "producer", NIXL % "consumer", "kv_connector mismatch between prefill"),
        (NIXL % "producer", NIXL % "consumer", None),
        (None, NIXL % "consumer", "prefill worker has no kv-transfer-config"),
        (NIXL % "producer", None, "decode worker has no kv-transfer-config"),
        ('{"kv_role":"kv_producer"}', NIXL % "consumer", "kv_connector is missing"),
        ('{"kv_connector":"X","kv_role":"kv_producer"}', NIXL % "consumer", "unsupported kv_connector"),
        (NIXL % "consumer", NIXL % "consumer", "invalid kv_role"),
        (NIXL % "producer", NIXL % "producer", "invalid kv_role"),
        (None, None, None),
        (
            '{"kv_connector":"MooncakeConnectorV1","kv_role":"kv_producer"}',
            '{"kv_connector":"MooncakeConnectorV1","kv_role":"kv_consumer"}',
            None,
        ),
    ],
)
def test_kv_connector_config(prefill: str | None, decode: str | None, message: str | None) -> None:
    backend = pd(
        {"kv-transfer-config": prefill} if prefill else None,
        {"kv-transfer-config": decode} if decode else None,
    )
    if message is None:
        ok(booster(backend))
        return
    (error,) = failures(booster(backend))
    assert error.field == "spec.backend.workers"
    assert message in error.message


def test_kv_connector_decode_first_is_valid() -> None:
    backend = pd({"kv-transfer-config": NIXL % "producer"}, {"kv-transfer-config": NIXL % "consumer"})
    backend["workers"].reverse()
    ok(booster(backend))


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_duplicate_pd_workers(kind: str) -> None:
    backend = pd()
    backend["workers"].append({"type": kind, "image": "x"})
    errors = failures(booster(backend))
    assert any(f"found 2 {kind} workers, expected at most 1" in e.message for e in errors)


# --------------------------------------------------------------------------- CRD-valid, not convertible


@pytest.mark.parametrize("missing", ["prefill", "decode"])
def test_pd_backend_without_a_role_worker(missing: str) -> None:
    backend = pd()
    backend["workers"] = [w for w in backend["workers"] if w["type"] != missing]
    (error,) = failures(booster(backend))
    assert error.field == "spec.backend.workers"
    assert error.message.startswith(f"{missing} worker not found in backend")


def test_generated_names_longer_than_63_characters() -> None:
    name = "m" * 40
    backend = vllm(name="b" * 30)
    errors = failures(booster(backend, name=name))
    assert errors[0].field == "spec.backend.name"
    assert "more than 63" in errors[0].message
    assert "shorten" in errors[0].message


def test_pod_and_service_names_longer_than_63_characters() -> None:
    """``<ms>-<g>-leader-<r>-<p>`` must fit too, even when the ModelServing name itself does."""
    errors = failures(booster(vllm(name="backend1"), name="m" * 48))
    assert errors[0].field == "spec.backend.name"
    assert "invalid name: generated pod/service name" in errors[0].message


def test_booster_name_with_dots_is_reported() -> None:
    errors = failures(booster(vllm(), name="my.model"))
    assert {e.field for e in errors} >= {"metadata.name"}


def test_empty_cache_uri_is_reported() -> None:
    backend = vllm()
    del backend["cacheURI"]
    (error,) = failures(booster(backend))
    assert error.field == "spec.backend.cacheURI"
    assert "cacheURI is required" in error.message


def test_unsupported_backend_type() -> None:
    (error,) = failures(booster(vllm(type="MindIEDisaggregated")))
    assert error.field == "spec.backend.type"
    assert "not support model backend type: MindIEDisaggregated" in error.message


def test_both_autoscaling_levels() -> None:
    obj = booster(vllm(autoscalingPolicy={"metrics": [{"metricName": "m", "targetValue": 1}]}))
    obj["spec"]["autoscalingPolicy"] = {"metrics": [{"metricName": "m", "targetValue": 1}]}
    (error,) = failures(obj)
    assert error.field == "spec.backend.autoscalingPolicy"


def test_errors_are_collected_across_backends() -> None:
    obj = booster(vllm())
    first, second = vllm(name="a", replicas=2_000_000), vllm(name="b")
    second["workers"][0]["type"] = "decode"
    obj["spec"] = {"backends": [first, second]}
    fields = {e.field for e in failures(obj)}
    assert fields == {"spec.backends[0].replicas", "spec.backends[1].workers[0].type"}


def test_head_inputs_all_convert() -> None:
    for path in sorted(HEAD_INPUT.glob("*.yaml")):
        ok(yaml.safe_load(path.read_text()))
