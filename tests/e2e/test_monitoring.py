"""Every metric the Grafana dashboard and the alerting rules use is exported by a running Ferry service.

All services, the router and the local node run; a booster becomes Active and answers one request;
then each service's ``/metrics`` is scraped and every metric named in a panel query or a rule
expression must be among what they export (a renamed or dropped metric fails here, not on a
dashboard in production).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml
from ferry_cli.templates import find_template
from ferry_local.chart import chart_dir
from ferry_local.system import SystemInfo
from openai import OpenAI

from tests.conftest import KubeEnv
from tests.support.cluster import eventually

pytestmark = pytest.mark.e2e

FILES = chart_dir() / "files"
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "rate", "increase", "irate", "histogram_quantile",
    "or", "and", "unless", "on", "ignoring", "group_left", "group_right", "vector", "label_values", "bool",
    "offset", "topk", "bottomk", "clamp_min", "clamp_max", "abs", "delta", "deriv", "humanize",
}  # fmt: skip
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (label matchers, groupings, ranges and strings removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {
        w
        for w in _IDENT.findall(expr)
        if w not in PROMQL_WORDS and not w.startswith("$") and not w[0].isdigit()
    }


def dashboard_queries() -> Iterator[str]:
    dashboard = json.loads((FILES / "ferry-dashboard.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or []:
            yield target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") == "query":
            yield re.sub(r"label_values\(([^,]+),.*\)", r"\1", variable["definition"])


def rule_expressions() -> Iterator[str]:
    for group in yaml.safe_load((FILES / "ferry-rules.yaml").read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


def exported(urls: dict[str, str]) -> dict[str, set[str]]:
    """Per service, every metric family and sample name its ``/metrics`` exposes."""
    found: dict[str, set[str]] = {}
    for service, url in urls.items():
        with urllib.request.urlopen(url, timeout=10) as answer:
            text = answer.read().decode()
        names = set()
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                names.add(line.split()[2])
            elif line and not line.startswith("#"):
                names.add(line.split("{")[0].split(" ")[0])
        found[service] = names
    return found


def is_exported(name: str, names: set[str]) -> bool:
    family = re.sub(r"_(bucket|sum|count|created)$", "", name)
    return name in names or family in names or name.removesuffix("_total") in names


def test_queries_are_parsed_into_metric_names() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, model) (rate(kthena_router_request_duration_seconds_bucket"
        '{model=~"$model"}[$__rate_interval])))'
    ) == {"kthena_router_request_duration_seconds_bucket"}
    assert metric_names("max by (namespace, model) (ferry_router_model_ready_endpoints) == 0") == {
        "ferry_router_model_ready_endpoints"
    }


def test_every_metric_used_is_exported_by_a_running_service(
    ferry: SystemInfo, kube: KubeEnv, e2e_namespace: str
) -> None:
    manifest = find_template("Qwen2.5-0.5B-CPU").render({"name": "mon", "namespace": e2e_namespace})
    kube.kubectl_run("apply", "-f", "-", input=json.dumps(manifest))

    def active() -> bool:
        obj: dict[str, Any] = json.loads(
            kube.kubectl_run("-n", e2e_namespace, "get", "modelbooster", "mon", "-o", "json").stdout
        )
        return any(
            c["type"] == "Active" and c["status"] == "True"
            for c in obj.get("status", {}).get("conditions") or []
        )

    eventually(active, 180, "booster mon Active")
    client = OpenAI(base_url=f"{ferry.router_url}/v1", api_key="test", timeout=30, max_retries=2)

    def answered() -> bool:
        try:  # the route reaches the router's table shortly after the booster turns Active
            return bool(
                client.chat.completions.create(model="mon", messages=[{"role": "user", "content": "hi"}])
            )
        except openai.NotFoundError:
            return False

    eventually(answered, 60, "an answer through the router")

    by_service = exported(ferry.metrics)
    everything = set().union(*by_service.values())
    used = {name for expr in [*dashboard_queries(), *rule_expressions()] for name in metric_names(expr)}
    assert len(used) > 20, used
    missing = sorted(name for name in used if not is_exported(name, everything))
    assert not missing, f"used by the dashboard or rules but exported by no running service: {missing}"

    # and the one the no-endpoint alert reads says what it should
    with urllib.request.urlopen(ferry.metrics["router"], timeout=10) as answer:
        router = answer.read().decode()
    ready = f'ferry_router_model_ready_endpoints{{model="mon",namespace="{e2e_namespace}"}} 1.0'
    assert ready in router, [line for line in router.splitlines() if "ready_endpoints" in line]
