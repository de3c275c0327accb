"""ExternalModelProvider compilation, URL building and target fallback order (spec §16)."""

from __future__ import annotations

import base64
import random

import pytest
from ferry_router.external import provider_url
from ferry_router.matching import fallback_order
from ferry_router.state.providers import ProviderTable, parse_provider
from ferry_router.state.resources import Rule, Target
from ferry_schemas.models.provider import CREDENTIAL_LABEL


def provider(base_url: str, provider_type: str = "OpenAI", **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ExternalModelProvider",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"baseURL": base_url, "providerType": provider_type, **spec},
    }


@pytest.mark.parametrize(
    ("base", "kind", "url"),
    [
        ("https://api.deepseek.com", "OpenAI", "https://api.deepseek.com/v1/chat/completions?x=1"),
        ("https://api.openai.com/v1/", "OpenAI", "https://api.openai.com/v1/chat/completions?x=1"),
        ("https://gw.example.com/openai", "OpenAI", "https://gw.example.com/openai/chat/completions?x=1"),
        ("https://api.anthropic.com", "Anthropic", "https://api.anthropic.com/v1/chat/completions?x=1"),
        (
            "https://gw.example.com/anthropic",
            "Anthropic",
            "https://gw.example.com/anthropic/v1/chat/completions?x=1",
        ),
        ("https://api.anthropic.com/v1", "Anthropic", "https://api.anthropic.com/v1/chat/completions?x=1"),
    ],
)
def test_upstream_url_keeps_one_v1_and_the_query(base: str, kind: str, url: str) -> None:
    assert provider_url(parse_provider(provider(base, kind)), "/v1/chat/completions", "x=1") == url


def test_auth_scheme_defaults_per_type_and_plain_http_is_refused() -> None:
    auth = {"secretRef": {"name": "s", "key": "k"}}
    assert parse_provider(provider("https://a.example", auth=auth)).auth_scheme == "Bearer"
    assert parse_provider(provider("https://a.example", "Anthropic", auth=auth)).auth_scheme == "APIKey"
    assert parse_provider(provider("https://a.example")).auth_scheme is None
    with pytest.raises(ValueError, match="https"):
        parse_provider(provider("http://a.example"))


def test_only_labelled_credentials_resolve_and_a_rotation_applies() -> None:
    table = ProviderTable()
    table.apply_provider("ns/p", provider("https://a.example", auth={"secretRef": {"name": "s", "key": "k"}}))

    def secret(value: str, labels: dict[str, str]) -> dict[str, object]:
        data = {"k": base64.b64encode(value.encode()).decode()}
        return {"metadata": {"name": "s", "namespace": "ns", "labels": labels}, "data": data}

    assert not table.ready("ns", "p")
    table.apply_credential("ns/s", secret("sk-1", {}))
    assert not table.ready("ns", "p")
    table.apply_credential("ns/s", secret(" sk-1\n", {CREDENTIAL_LABEL: "true"}))
    assert table.api_key(table.providers["ns/p"]) == "sk-1"
    table.apply_credential("ns/s", secret("", {CREDENTIAL_LABEL: "true"}))
    assert not table.ready("ns", "p")
    table.apply_credential("ns/s", None)
    assert not table.ready("ns", "p")


def test_fallback_order_skips_the_drawn_target_and_zero_weights() -> None:
    a, b, c, z = Target("a", None, 60), Target(None, "b", 30), Target("c", None, 10), Target("z", None, 0)
    rule = Rule("r", (), None, None, False, (a, b, c, z), 100)
    rng = random.Random(7)
    firsts = [fallback_order(rule, a, rng)[0] for _ in range(4000)]
    assert all(set(fallback_order(rule, a, rng)) == {b, c} for _ in range(10))
    assert 0.70 < firsts.count(b) / 4000 < 0.80  # 30 / (30 + 10)
