"""The CRD generator: structural output, Kthena compatibility, and no drift from deploy/crds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_schemas.crdgen import crd, generate, openapi_schema
from ferry_schemas.crdgen.__main__ import check, main
from ferry_schemas.crdgen.structural import NotStructuralError, to_structural
from ferry_schemas.models import KINDS, KubeObject, ModelServing
from ferry_schemas.models.reference import shared_dir

REPO = Path(__file__).resolve().parents[3]
CRD_DIR = REPO / "deploy" / "crds"
KTHENA_CRDS = shared_dir() / "reference" / "kthena"
KIND_IDS = [kind.KIND for kind in KINDS]
# Kthena schema subtrees Ferry keeps as free-form JSON on purpose (embedded core/v1 types).
# Patterns Ferry widens on purpose (the superset of every generation's URI schemes).
WIDENED_PATTERNS = (".modelURI",)
FREE_FORM_IN_FERRY = (
    "entryTemplate",
    "workerTemplate",
    "affinity",
    "resources",
    "tolerations",
    "env",
    "envFrom",
)


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(node, dict):
        return
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _kthena_crd(kind: type[KubeObject], version: str = "head") -> dict[str, Any] | None:
    path = KTHENA_CRDS / version / "crds" / f"{kind.GROUP}_{kind.PLURAL}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


def test_committed_crds_match_the_models() -> None:
    problems = check(CRD_DIR, generate())
    assert not problems, "deploy/crds is stale, run `make crds`:\n" + "\n".join(problems)


def test_check_mode_reports_drift_and_write_mode_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 0
    assert main([str(tmp_path), "--check"]) == 0
    target = tmp_path / "workload.serving.volcano.sh_modelboosters.yaml"
    target.write_text(target.read_text().replace("maxLength: 64", "maxLength: 65"))
    (tmp_path / "stale.yaml").write_text("{}\n")
    assert main([str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "-                  maxLength: 65" in err or "maxLength: 65" in err
    assert "stale.yaml" in err


def test_output_is_deterministic() -> None:
    assert generate() == generate()


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_schema_is_structural(kind: type[KubeObject]) -> None:
    schema = openapi_schema(kind)
    text = yaml.safe_dump(schema)
    for keyword in ("$ref", "$defs", "anyOf", "allOf"):
        assert keyword not in text
    for path, node in _walk(schema):
        special = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        assert "type" in node or special, f"{kind.KIND}{path}: no type"
        assert "title" not in node, f"{kind.KIND}{path}: pydantic title left"
        if node.get("type") == "object" and "properties" in node:
            assert "additionalProperties" not in node, (
                f"{kind.KIND}{path}: properties and additionalProperties"
            )
        for rule in node.get("x-kubernetes-validations", []):
            assert rule.get("message") or rule.get("messageExpression"), (
                f"{kind.KIND}{path}: rule without message"
            )


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_status_subresource_everywhere(kind: type[KubeObject]) -> None:
    (version,) = crd(kind)["spec"]["versions"]
    assert "status" in version["subresources"]
    assert "status" in version["schema"]["openAPIV3Schema"]["properties"]


def test_scale_subresource_on_model_serving() -> None:
    (version,) = crd(ModelServing)["spec"]["versions"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.labelSelector",
    }


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_names_and_printer_columns_cover_kthena(kind: type[KubeObject]) -> None:
    theirs = _kthena_crd(kind) or _kthena_crd(kind, "v0.4.0")
    if theirs is None:
        assert kind.KIND == "PodGroup"  # Volcano's, not Kthena's
        return
    ours = crd(kind)
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    for key in ("group", "names", "scope"):
        assert ours["spec"][key] == theirs["spec"][key], key
    (our_version,) = ours["spec"]["versions"]
    (their_version,) = theirs["spec"]["versions"]
    our_columns = {(c["name"], c["jsonPath"], c["type"]) for c in our_version["additionalPrinterColumns"]}
    for column in their_version.get("additionalPrinterColumns", []):
        assert (column["name"], column["jsonPath"], column["type"]) in our_columns
    for name, sub in their_version.get("subresources", {}).items():
        assert our_version["subresources"][name] == sub


def _compatible_paths(
    kind: type[KubeObject], version: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    theirs = _kthena_crd(kind, version)
    if theirs is None:
        return
    ours = dict(_walk(openapi_schema(kind)))
    for path, node in _walk(theirs["spec"]["versions"][0]["schema"]["openAPIV3Schema"]):
        if path.startswith(".metadata") or any(f".{name}" in path for name in FREE_FORM_IN_FERRY):
            continue
        if path.endswith(".spec.topologySpreadConstraints") or ".spec.topologySpreadConstraints" in path:
            continue  # dead field of v0.1.0 ModelServing (booster.md §9.12)
        yield path, node, ours.get(path, {})


# v0.1.0 ModelServing had a different rollout/topology API; HEAD's is the one served.
COMPAT_CASES = [
    (kind, version)
    for version in ("head", "v0.4.0", "v0.1.0")
    for kind in KINDS
    if not (version == "v0.1.0" and kind is ModelServing)
]


@pytest.mark.parametrize(("kind", "version"), COMPAT_CASES, ids=[f"{k.KIND}-{v}" for k, v in COMPAT_CASES])
def test_kthena_fields_exist_with_enum_default_pattern(kind: type[KubeObject], version: str) -> None:
    """Ferry's schema is a superset: every Kthena field path exists, enums include Kthena's values."""
    missing, different = [], []
    for path, node, ours in _compatible_paths(kind, version):
        if not ours:
            missing.append(path)
            continue
        if "enum" in node and not set(node["enum"]) <= set(ours.get("enum", [])):
            different.append(f"{path}: enum {node['enum']} vs {ours.get('enum')}")
        for key in ("default", "pattern"):
            if key == "pattern" and path.endswith(WIDENED_PATTERNS):
                continue
            if key in node and node[key] != ours.get(key):
                different.append(f"{path}: {key} {node[key]!r} vs {ours.get(key)!r}")
    assert not missing, f"{kind.KIND}: fields of Kthena {version} missing: {missing}"
    assert not different, f"{kind.KIND}: differs from Kthena {version}: {different}"


def test_union_other_than_int_or_string_is_refused() -> None:
    with pytest.raises(NotStructuralError):
        to_structural({"anyOf": [{"type": "integer"}, {"type": "boolean"}]}, {})


def test_optional_reference_is_inlined_with_field_keywords() -> None:
    defs = {"T": {"type": "object", "properties": {"a": {"type": "string"}}, "x-kubernetes-validations": [1]}}
    node = {
        "anyOf": [{"$ref": "#/$defs/T"}, {"type": "null"}],
        "default": None,
        "x-kubernetes-validations": [2],
    }
    assert to_structural(node, defs) == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "x-kubernetes-validations": [1, 2],
    }
