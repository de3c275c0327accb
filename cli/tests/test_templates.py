"""Model templates: every one renders to a ModelBooster the schemas accept; --set is typed and checked."""

from __future__ import annotations

import pytest
from ferry_cli.errors import CliError
from ferry_cli.templates import all_templates, find_template, parse_sets
from ferry_schemas.models import ModelBooster


def test_the_issue_templates_exist() -> None:
    names = {t.name for t in all_templates()}
    assert {"Qwen3-8B", "DeepSeek-R1-Distill-Qwen-7B", "Qwen3-8B-PD"} <= names


@pytest.mark.parametrize("template", all_templates(), ids=lambda t: t.name)
def test_every_template_renders_a_valid_booster(template) -> None:
    manifest = template.render({"namespace": "ns1"})
    booster = ModelBooster.model_validate(manifest)
    assert booster.metadata.name == template.parameters["name"].default
    assert manifest["metadata"]["namespace"] == "ns1"
    assert "${" not in str(manifest)


def test_set_overrides_keep_types_and_reach_every_use() -> None:
    manifest = find_template("qwen3-8b-pd").render(parse_sets(["name=pd1", "replicas=3", "gpus=2"]))
    backend = manifest["spec"]["backend"]
    assert manifest["metadata"]["name"] == "pd1"
    assert backend["replicas"] == 3
    assert [w["resources"]["limits"]["nvidia.com/gpu"] for w in backend["workers"]] == [2, 2]


def test_template_names_match_case_insensitively() -> None:
    assert find_template("deepseek-r1-distill-qwen-7b").name == "DeepSeek-R1-Distill-Qwen-7B"


@pytest.mark.parametrize(
    ("template", "sets", "message"),
    [
        ("Qwen3-8B", ["replicas=two"], "expected int"),
        ("Qwen3-8B", ["colour=red"], "has no parameter colour; its parameters: name"),
        ("Qwen3-8B", ["replicas"], "expected KEY=VALUE"),
        ("Llama-9000", [], "no template 'Llama-9000'; available: "),
    ],
)
def test_bad_input_is_a_clear_error(template: str, sets: list[str], message: str) -> None:
    with pytest.raises(CliError, match=message):
        find_template(template).render(parse_sets(sets))


def test_string_parameters_take_numbers_as_text() -> None:
    manifest = find_template("Qwen3-8B").render(parse_sets(["name=7b", "image=repo/vllm:0.11"]))
    assert manifest["metadata"]["name"] == "7b"
    assert manifest["spec"]["backend"]["workers"][0]["image"] == "repo/vllm:0.11"
