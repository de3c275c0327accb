"""Route matching table tests (spec §18.2 StoreMatchModelTarget*, MatchString, weights)."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from ferry_router.matching import match_route, pick_target
from ferry_router.state.resources import compile_string_match, parse_route
from ferry_router.state.table import RoutingTable
from ferry_schemas.models import StringMatch

from .objects import route


def table_with(*routes: dict) -> RoutingTable:
    table = RoutingTable()
    for r in routes:
        table.apply_route(f"{r['metadata']['namespace']}/{r['metadata']['name']}", r)
    return table


@pytest.mark.parametrize(
    ("matcher", "value", "expected"),
    [
        ({"exact": "a"}, "a", True),
        ({"exact": "a"}, "ab", False),
        ({"prefix": "/v1"}, "/v1/chat", True),
        ({"prefix": "/v1"}, "/v2", False),
        ({"regex": "chat"}, "/v1/chat/completions", True),  # unanchored search
        ({"regex": "^chat"}, "/v1/chat", False),
        ({}, "anything", True),  # empty matcher matches all
        ({"exact": "a", "prefix": "zzz"}, "a", True),  # exact wins over prefix
        ({"exact": ""}, None, False),  # absent header never matches (Kthena: compared as "")
        ({"prefix": ""}, None, False),
    ],
)
def test_string_match(matcher: dict, value: str | None, expected: bool) -> None:
    assert compile_string_match(StringMatch.model_validate(matcher), "m").matches(value) is expected


def test_invalid_regex_is_refused_at_parse() -> None:
    bad = route(
        "r", "m", [{"modelMatch": {"uri": {"regex": "("}}, "targetModels": [{"modelServerName": "s"}]}]
    )
    with pytest.raises(ValueError, match="invalid regular expression"):
        parse_route(bad)
    table = table_with(bad)
    assert "modelroutes/default/r" in table.invalid
    assert match_route(table, "m", "/v1/chat/completions", {}) is None


MULTI = route(
    "multi",
    "deepseek-multi-models",
    [
        {
            "name": "premium",
            "modelMatch": {"headers": {"user-type": {"exact": "premium"}}},
            "targetModels": [{"modelServerName": "ds-7b"}],
        },
        {"name": "default", "targetModels": [{"modelServerName": "ds-1-5b"}]},
    ],
)
URI = route(
    "uri",
    "uri-model",
    [
        {"modelMatch": {"uri": {"exact": "/v1/completions"}}, "targetModels": [{"modelServerName": "exact"}]},
        {"modelMatch": {"uri": {"prefix": "/v1/chat"}}, "targetModels": [{"modelServerName": "prefix"}]},
        {"targetModels": [{"modelServerName": "fallback"}]},
    ],
)
BODY = route(
    "body",
    "body-model",
    [
        {"modelMatch": {"body": {"model": "other"}}, "targetModels": [{"modelServerName": "never"}]},
        {"modelMatch": {"body": {"model": "body-model"}}, "targetModels": [{"modelServerName": "yes"}]},
    ],
)
LORA = route("lora", "base", loras=["lora-A", "lora-B"], server="lora-srv")


@pytest.mark.parametrize(
    ("model", "path", "headers", "server", "is_lora"),
    [
        ("deepseek-multi-models", "/v1/chat/completions", {"user-type": "premium"}, "ds-7b", False),
        ("deepseek-multi-models", "/v1/chat/completions", {}, "ds-1-5b", False),
        ("deepseek-multi-models", "/v1/chat/completions", {"user-type": "basic"}, "ds-1-5b", False),
        ("deepseek-multi-models", "/v1/chat/completions", {"user-type": ""}, "ds-1-5b", False),
        ("uri-model", "/v1/completions", {}, "exact", False),
        ("uri-model", "/v1/chat/completions", {}, "prefix", False),
        ("uri-model", "/v1/embeddings", {}, "fallback", False),
        ("body-model", "/v1/completions", {}, "yes", False),
        ("base", "/v1/completions", {}, "lora-srv", False),
        ("lora-A", "/v1/completions", {}, "lora-srv", True),
        ("lora-B", "/v1/chat/completions", {}, "lora-srv", True),
    ],
)
def test_match_table(model: str, path: str, headers: dict, server: str, is_lora: bool) -> None:
    table = table_with(MULTI, URI, BODY, LORA)
    match = match_route(table, model, path, headers)
    assert match is not None
    assert match.target.server == server
    assert match.is_lora is is_lora
    assert match.server_key == f"default/{server}"


def test_unknown_names_do_not_match() -> None:
    table = table_with(MULTI, LORA)
    assert match_route(table, "lora-NonExistent", "/v1/completions", {}) is None
    assert match_route(table, "nope", "/v1/completions", {}) is None


def test_no_rule_matches_means_no_match() -> None:
    only = route(
        "only",
        "m",
        [{"modelMatch": {"headers": {"x": {"exact": "1"}}}, "targetModels": [{"modelServerName": "s"}]}],
    )
    assert match_route(table_with(only), "m", "/v1/completions", {}) is None


def test_duplicate_routes_prefer_oldest_and_newer_takes_over_after_delete() -> None:
    old = route("old", "dup-model", server="one-5b", created="2026-01-01T00:00:00Z")
    new = route("new", "dup-model", server="seven-b", created="2026-02-01T00:00:00Z")
    table = table_with(new, old)
    assert match_route(table, "dup-model", "/v1/completions", {}).target.server == "one-5b"  # type: ignore[union-attr]
    table.apply_route("default/old", None)
    assert match_route(table, "dup-model", "/v1/completions", {}).target.server == "seven-b"  # type: ignore[union-attr]


def test_same_age_ties_broken_by_namespace_then_name() -> None:
    b = route("b", "tie", server="from-b")
    a = route("a", "tie", server="from-a")
    assert match_route(table_with(b, a), "tie", "/", {}).target.server == "from-a"  # type: ignore[union-attr]


def test_update_reindexes_lora_names() -> None:
    table = table_with(route("r", "base", loras=["old-lora"]))
    table.apply_route("default/r", route("r", "base", loras=["new-lora"]))
    assert match_route(table, "old-lora", "/", {}) is None
    assert match_route(table, "new-lora", "/", {}) is not None
    assert table.model_names() == ["base", "new-lora"]


def test_zero_weight_rule_falls_through_to_next_rule() -> None:
    r = route(
        "z",
        "m",
        [
            {"targetModels": [{"modelServerName": "dead", "weight": 0}]},
            {"targetModels": [{"modelServerName": "alive"}]},
        ],
    )
    assert match_route(table_with(r), "m", "/", {}).target.server == "alive"  # type: ignore[union-attr]


def test_missing_weights_default_to_100_and_weight_ratio_is_relative() -> None:
    r = parse_route(
        route(
            "w",
            "m",
            [
                {
                    "targetModels": [
                        {"modelServerName": "a", "weight": 50},
                        {"modelServerName": "b", "weight": 30},
                    ]
                }
            ],
        )
    )
    rng = random.Random(7)
    counts = Counter(pick_target(r.rules[0], rng).server for _ in range(8000))  # type: ignore[union-attr]
    assert abs(counts["a"] / 8000 - 5 / 8) < 0.03
    defaults = parse_route(
        route("d", "m", [{"targetModels": [{"modelServerName": "a"}, {"modelServerName": "b"}]}])
    )
    assert [t.weight for t in defaults.rules[0].targets] == [100, 100]


@pytest.mark.parametrize(
    ("spec_patch", "message"),
    [
        ({"modelName": "", "loraAdapters": []}, "cannot both be empty"),
        ({"loraAdapters": [""]}, "cannot be an empty string"),
        ({"rules": []}, "at least one rule"),
        ({"rules": [{"targetModels": []}]}, "targetModels: List should have at least 1 item"),
        ({"rules": [{"targetModels": [{"weight": 1}]}]}, "exactly one of"),
        (
            {"rules": [{"targetModels": [{"modelServerName": "a", "weight": 101}]}]},
            "weight: Input should be less",
        ),
        (
            {"rules": [{"targetModels": [{"modelServerName": 7}]}]},
            "modelServerName: Input should be a valid string",
        ),
        ({"rateLimit": {"inputTokensPerUnit": 5, "unit": "week"}}, "unit"),
    ],
)
def test_invalid_routes_are_refused_with_the_field(spec_patch: dict, message: str) -> None:
    obj = route("bad", "m")
    obj["spec"].update(spec_patch)
    with pytest.raises(ValueError, match=message):
        parse_route(obj)
