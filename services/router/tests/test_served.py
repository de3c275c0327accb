"""The model name asked of the engines: ``spec.model`` when served, else the engines' base model."""

from __future__ import annotations

from ferry_router.served import engine_model
from ferry_router.state.resources import Pod
from ferry_router.state.table import Endpoint


def engine(name: str, models: list[str] | None, bases: tuple[str, ...] = ()) -> Endpoint:
    endpoint = Endpoint(pod=Pod("default", name, "127.0.0.1", {}, True), port=8000, engine="vllm")
    endpoint.metrics.models = None if models is None else frozenset(models)
    endpoint.metrics.base_models = bases
    return endpoint


def test_a_served_name_is_kept() -> None:
    assert engine_model("qwen", [engine("a", ["qwen", "lora-1"], ("qwen",))]) == "qwen"


def test_an_unserved_name_becomes_the_base_model_the_engines_serve() -> None:
    path = "/models/Qwen2.5-0.5B-Instruct"
    engines = [engine("a", [path, "lora-1"], (path,)), engine("b", None), engine("c", [path], (path,))]
    assert engine_model("qwen", engines) == path


def test_unknown_until_scraped_and_ties_are_deterministic() -> None:
    assert engine_model("qwen", [engine("a", None)]) == "qwen"
    assert engine_model("qwen", []) == "qwen"
    assert engine_model("qwen", [engine("a", ["y"], ("y",)), engine("b", ["x"], ("x",))]) == "x"
    assert engine_model("qwen", [engine("a", ["only-adapters"], ())]) == "qwen"
