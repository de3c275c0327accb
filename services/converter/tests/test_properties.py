"""Hypothesis properties of the conversion (issue 3 §6).

For any schema-valid ModelBooster (valid for Ferry's pydantic model, i.e. its CRD schema):
conversion never raises, is deterministic to the byte, every child it produces is valid for its
own model, and every generated name (children, and the pods/services their ModelServing renders)
is a DNS-1123 label -- or the conversion reports a ConversionError instead of producing children.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from ferry_converter.booster.convert import convert_booster
from ferry_converter.desired import desired_set
from ferry_converter.serving.convert import convert_serving
from ferry_local.paths import shared_dir
from ferry_schemas import labels as L
from ferry_schemas.bus import ObjectEvent, Resource, canonical_json
from ferry_schemas.models import (
    AutoscalingPolicy,
    AutoscalingPolicyBinding,
    ModelBooster,
    ModelRoute,
    ModelServer,
    ModelServing,
)
from ferry_schemas.workload import render_group
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

MODELS = {
    "ModelServing": ModelServing,
    "ModelServer": ModelServer,
    "ModelRoute": ModelRoute,
    "AutoscalingPolicy": AutoscalingPolicy,
    "AutoscalingPolicyBinding": AutoscalingPolicyBinding,
}

DNS_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"
label = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z", fullmatch=True)
long_label = st.from_regex(r"\A[a-z]([-a-z0-9]{0,61}[a-z0-9])?\Z", fullmatch=True)
json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
config_key = st.sampled_from(
    ["port", "served-model-name", "kv-transfer-config", "max_model_len", "trust-remote-code", "x"]
) | st.text(min_size=1, max_size=6)
kv_config = st.builds(
    lambda c, r: __import__("json").dumps(
        {k: v for k, v in (("kv_connector", c), ("kv_role", r)) if v is not None}
    ),
    st.sampled_from(
        [None, "NixlConnector", "MooncakeConnector", "MooncakeConnectorV1", "LMCacheConnectorV1", "Other"]
    ),
    st.sampled_from([None, "kv_producer", "kv_consumer", "kv_both", "bad"]),
) | st.text(max_size=6)
config_value = st.one_of(
    json_value, kv_config, st.integers(0, 70000), st.sampled_from(["9000", "8000", None])
)
config = st.none() | st.dictionaries(config_key, config_value, max_size=4)
quantity = st.sampled_from(["1", "2", "500m", "1Gi", "16", "0", "1.5"])
resources = st.fixed_dictionaries(
    {},
    optional={
        "limits": st.dictionaries(
            st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "huawei.com/ascend-1980"]),
            quantity,
            max_size=3,
        ),
        "requests": st.dictionaries(
            st.sampled_from(["cpu", "memory", "nvidia.com/gpu"]), quantity, max_size=2
        ),
    },
)
worker = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["server", "prefill", "decode", "controller", "coordinator"]),
        "image": st.sampled_from(["vllm:latest", "img", "a b", "  "]),
        "replicas": st.integers(0, 3),
        "pods": st.integers(0, 4),
        "resources": resources,
        "affinity": st.just({"nodeAffinity": {}}),
        "tolerations": st.just([{"key": "k", "operator": "Exists"}]),
        "config": config,
    },
)
env = st.lists(
    st.builds(
        lambda n, v: {"name": n, "value": v},
        st.sampled_from(
            [
                "RUNTIME_PORT",
                "RUNTIME_URL",
                "ENDPOINT",
                "HF_ENDPOINT",
                "KTHENA_SKIP_ENGINE_DEPENDENCY_INSTALL",
                "X",
            ]
        ),
        st.sampled_from(["8900", "true", "", "http://e", "${name}", "x"]),
    ),
    max_size=4,
)
policy = st.just({"metrics": [{"metricName": "m", "targetValue": 10}]})


def typed_worker(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    """A worker of one type with a valid image: most generated backends are then convertible."""
    return worker.map(lambda w: {**w, "type": kind, "image": "vllm:latest"})


coherent_workers = st.one_of(
    st.tuples(st.just("vLLM"), st.tuples(typed_worker("server")).map(list)),
    st.tuples(
        st.just("vLLMDisaggregated"), st.tuples(typed_worker("prefill"), typed_worker("decode")).map(list)
    ),
)
random_workers = st.tuples(
    st.sampled_from(["vLLM", "vLLMDisaggregated"]), st.lists(worker, min_size=1, max_size=3)
)


def backend_strategy(name: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(
        st.one_of(coherent_workers, coherent_workers, random_workers),
        st.fixed_dictionaries(
            {
                "name": name,
                "modelURI": st.sampled_from(
                    ["hf://Qwen/Q", "s3://b/m", "pvc://claim/models/q", "pvc://../x", "ms://a/b"]
                ),
                "cacheURI": st.sampled_from(
                    [
                        "hostpath:///tmp/c",
                        "hostpath://c",
                        "pvc://claim",
                        "hostpath:///x",
                        "pvc://",
                        "pvc://a/b",
                    ]
                ),
            },
            optional={
                "replicas": st.integers(0, 3),
                "minReplicas": st.integers(0, 2),
                "maxReplicas": st.integers(1, 4),
                "env": env,
                "envFrom": st.just([{"secretRef": {"name": "s"}}]),
                "schedulerName": st.sampled_from(["", "volcano"]),
                "runtimeClassName": st.just("nvidia"),
                "routeWeight": st.integers(0, 100),
                "scalingCost": st.integers(0, 5),
                "autoscalingPolicy": policy,
                "loraAdapters": st.lists(
                    st.builds(lambda n: {"name": n, "artifactURL": f"s3://b/{n}"}, label),
                    max_size=2,
                    unique_by=lambda a: a["name"],
                ),
            },
        ),
    ).map(lambda pair: {**pair[1], "type": pair[0][0], "workers": pair[0][1]})


def booster_strategy() -> st.SearchStrategy[dict[str, Any]]:
    name = label | long_label
    spec_single = st.fixed_dictionaries({"backend": backend_strategy(label | long_label)})
    spec_many = st.fixed_dictionaries(
        {"backends": st.lists(backend_strategy(label), min_size=1, max_size=3, unique_by=lambda b: b["name"])}
    )
    spec = st.one_of(spec_single, spec_many).flatmap(
        lambda s: st.fixed_dictionaries(
            {k: st.just(v) for k, v in s.items()},
            optional={
                "name": label,
                "modelMatch": st.just({"headers": {"user": {"exact": "john"}}}),
                "autoscalingPolicy": policy,
                "costExpansionRatePercent": st.integers(0, 300),
            },
        )
    )
    return st.builds(
        lambda n, s: {
            "apiVersion": "workload.serving.volcano.sh/v1alpha1",
            "kind": "ModelBooster",
            "metadata": {"name": n, "namespace": "ns", "uid": "uid", "generation": 1},
            "spec": s,
        },
        name,
        spec,
    )


def schema_valid(obj: dict[str, Any]) -> bool:
    try:
        ModelBooster.model_validate(obj)
    except ValidationError:
        return False
    return True


PROPERTY_SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(booster_strategy())
def test_conversion_never_raises_and_is_deterministic(obj: dict[str, Any]) -> None:
    assume(schema_valid(obj))
    first = convert_booster(obj)
    second = convert_booster(obj)
    to_bytes = lambda r: canonical_json([r.children, [e.model_dump(mode="json") for e in r.errors]])  # noqa: E731
    assert to_bytes(first) == to_bytes(second)
    event = ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, obj)
    one, two = desired_set(event), desired_set(event)
    assert one.msg_id == two.msg_id
    assert one.model_dump(mode="json", exclude={"produced_at"}) == two.model_dump(
        mode="json", exclude={"produced_at"}
    )
    assert bool(first.children) != bool(first.errors)


@PROPERTY_SETTINGS
@given(booster_strategy())
def test_every_generated_name_is_a_dns_label_or_an_error(obj: dict[str, Any]) -> None:
    assume(schema_valid(obj))
    result = convert_booster(obj)
    if result.errors:
        assert result.children == []
        for error in result.errors:
            assert error.field
            assert error.message
        return
    for child in result.children:
        assert L.is_dns1123_label(child["metadata"]["name"]), child["metadata"]["name"]
        MODELS[child["kind"]].model_validate(child)
        for value in child["metadata"]["labels"].values():
            assert len(value) <= 63
        if child["kind"] == "ModelServing":
            workload, errors = convert_serving(child)
            assert errors == []
            assert workload is not None
            for ordinal in (0, max(workload.replicas - 1, 0)):
                for rendered in render_group(workload, ordinal):
                    assert L.is_dns1123_label(rendered["metadata"]["name"]), rendered["metadata"]["name"]
                    if rendered["kind"] == "Service":
                        assert L.is_dns1035_label(rendered["metadata"]["name"])


serving_role = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"\A[a-z][a-z0-9]{0,11}\Z", fullmatch=True),
        "workerReplicas": st.integers(0, 3),
        "entryTemplate": st.just(
            {"spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}
        ),
    },
    optional={
        "replicas": st.integers(0, 3),
        "workerTemplate": st.just({"spec": {"containers": [{"name": "w", "image": "i"}]}}),
    },
)


@PROPERTY_SETTINGS
@given(
    st.from_regex(r"\A[a-z]([-a-z0-9]{0,50}[a-z0-9])?\Z", fullmatch=True),
    st.lists(serving_role, min_size=1, max_size=4, unique_by=lambda r: r["name"]),
    st.integers(0, 12),
    st.sampled_from(["volcano", "default-scheduler"]),
)
def test_serving_names_are_valid_or_reported(
    name: str, roles: list[dict[str, Any]], replicas: int, scheduler: str
) -> None:
    obj = {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": name, "namespace": "ns", "uid": "u"},
        "spec": {"replicas": replicas, "schedulerName": scheduler, "template": {"roles": roles}},
    }
    workload, errors = convert_serving(obj)
    if errors:
        assert workload is None
        return
    assert workload is not None
    for ordinal in range(max(replicas, 1)):
        for rendered in render_group(workload, ordinal):
            assert L.is_dns1123_label(rendered["metadata"]["name"])
    assert canonical_json(render_group(workload, 0)) == canonical_json(render_group(workload, 0))


JUNK: list[Any] = [None, 0, -1, 1.5, "", "x", True, [], {}, [1], {"a": 1}, "${x}", 10**12]


def _leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _leaf_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _leaf_paths(item, (*path, index))
    return found


@pytest.mark.parametrize("source", ["model.yaml", "pd-disaggregated-model-npu.yaml"])
def test_never_raises_on_mutated_reference_inputs(source: str) -> None:
    """Every field of a reference input replaced by every junk value: errors, never exceptions.

    This goes beyond schema-valid input on purpose (the pure function must not trust its caller).
    """
    base = yaml.safe_load(
        (shared_dir() / "reference/kthena/head/convert-testdata/input" / source).read_text()
    )
    checked = 0
    for path in _leaf_paths(base):
        for junk in JUNK:
            obj = copy.deepcopy(base)
            node = obj
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = junk
            result = convert_booster(obj)
            assert bool(result.children) != bool(result.errors)
            for child in result.children:
                if child["kind"] == "ModelServing":
                    convert_serving(child)
            checked += 1
    assert checked > 500
