"""Spec §7.7 (``metric_collector_test.go``): extraction, URLs, readiness, Prometheus answers."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import pytest
from aiohttp import web
from ferry_autoscaler.algorithm.histogram import HistogramSnapshot
from ferry_autoscaler.collector import (
    MetricCollector,
    PrometheusError,
    is_disrupted,
    is_ready,
    pod_kept,
    pod_url,
    query_prometheus,
    target_selector,
)
from ferry_autoscaler.exposition import ExpositionError, extract, parse_families
from ferry_autoscaler.policies import LabelSelector, MetricTarget, PodSource, PrometheusSource, ServingRef

from .conftest import Serve, pod

TIMEOUT = aiohttp.ClientTimeout(total=1)


def test_counter_and_gauge_samples_are_summed() -> None:
    text = (
        '# TYPE reqs_total counter\nreqs_total{a="1"} 2\nreqs_total{a="2"} 3\n'
        '# TYPE load gauge\nload{x="a"} 4\nload{x="b"} 6\n'
    )
    families = parse_families(text)
    assert extract(families, "reqs").value == 5  # type: ignore[union-attr]
    assert extract(families, "reqs_total").value == 5  # type: ignore[union-attr]
    assert extract(families, "load").value == 10  # type: ignore[union-attr]
    assert extract(families, "absent") is None


def test_nan_samples_are_skipped() -> None:
    families = parse_families('# TYPE g gauge\ng{a="1"} 2.5\ng{a="2"} NaN\n')
    assert extract(families, "g").value == 2.5  # type: ignore[union-attr]


def test_histogram_gives_a_snapshot_of_its_first_series() -> None:
    text = (
        "# TYPE lat histogram\n"
        'lat_bucket{m="a",le="0.5"} 2\nlat_bucket{m="a",le="+Inf"} 4\nlat_sum{m="a"} 3\nlat_count{m="a"} 4\n'
        'lat_bucket{m="b",le="0.5"} 9\nlat_bucket{m="b",le="+Inf"} 9\nlat_sum{m="b"} 1\nlat_count{m="b"} 9\n'
    )
    sampled = extract(parse_families(text), "lat")
    assert sampled is not None
    assert sampled.value == 1.0
    assert sampled.histogram == HistogramSnapshot(3.0, 4.0, [(0.5, 2.0), (math.inf, 4.0)])


def test_untyped_and_malformed_payloads_are_errors() -> None:
    with pytest.raises(ExpositionError, match="unsupported type"):
        extract(parse_families("load 1\n"), "load")
    with pytest.raises(ExpositionError, match="malformed"):
        parse_families("# TYPE g gauge\ng{a=1 2\n")


def test_urls() -> None:
    assert pod_url("10.1.2.3", 8100, "/metrics") == "http://10.1.2.3:8100/metrics"
    assert pod_url("fd00::1", 8000, "/custom-metrics") == "http://[fd00::1]:8000/custom-metrics"
    assert pod_url("10.1.2.3", 0, "") == "http://10.1.2.3:8100/metrics"


def test_role_selector_adds_the_role_and_keeps_the_user_labels() -> None:
    user = LabelSelector.parse({"matchLabels": {"app": "router"}})
    selector = target_selector(ServingRef("ns", "ms"), "decode", user)
    assert dict(selector.match_labels) == {
        "app": "router",
        "modelserving.volcano.sh/name": "ms",
        "modelserving.volcano.sh/entry": "true",
        "modelserving.volcano.sh/role": "decode",
    }
    assert dict(user.match_labels) == {"app": "router"}  # the input is not changed


async def test_ready_and_unready_pods_with_two_sources(
    serve_metrics: Serve, session: aiohttp.ClientSession
) -> None:
    port = await serve_metrics(
        "127.0.0.2", {"/a": "# TYPE queue_depth gauge\nqueue_depth 40\n", "/b": "# TYPE q2 gauge\nq2 40\n"}
    )
    pods = [pod("ready", "127.0.0.2"), pod("unready", "127.0.0.3", ready=False)]
    metrics = [
        MetricTarget("queue_depth", 1, PodSource("queue_depth", "/a", port)),
        MetricTarget("queue_depth_alt", 1, PodSource("q2", "/b", port)),
    ]
    collected = await MetricCollector(session).collect(pods, ServingRef("ns", "ms"), metrics)
    assert collected.unready == 1
    assert collected.ready == {"queue_depth": 40, "queue_depth_alt": 40}


async def test_sum_over_ready_pods_and_group_dropped_on_restart(
    serve_metrics: Serve, session: aiohttp.ClientSession
) -> None:
    port = await serve_metrics("127.0.0.2", {"/metrics": "# TYPE load gauge\nload 3\n"})
    await serve_metrics("127.0.0.3", {"/metrics": "# TYPE load gauge\nload 4\n"})
    metric = [MetricTarget("load", 1, PodSource("load", "/metrics", port))]
    collector = MetricCollector(session)
    both = [pod("a", "127.0.0.2"), pod("b", "127.0.0.3")]
    assert (await collector.collect(both, ServingRef("ns", "ms"), metric)).ready == {"load": 7}
    restarted = [pod("a", "127.0.0.2"), pod("b", "127.0.0.3", restarts=1)]
    dropped = await collector.collect(restarted, ServingRef("ns", "ms"), metric)
    assert dropped.ready == {}
    assert "restarted" in dropped.problems[0]
    nobody = await collector.collect([], ServingRef("ns", "ms"), metric)
    assert nobody.problems == ["load: no pods selected"]


@pytest.fixture
async def prometheus(serve_metrics: Serve) -> int:
    async def hang(_: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="{}")

    app = web.Application()
    answers = {
        "scalar": {"resultType": "scalar", "result": [1, "42.5"]},
        "one": {"resultType": "vector", "result": [{"metric": {}, "value": [1, "7"]}]},
        "none": {"resultType": "vector", "result": []},
        "two": {"resultType": "vector", "result": [{"value": [1, "1"]}, {"value": [1, "2"]}]},
        "matrix": {"resultType": "matrix", "result": []},
    }

    async def query(request: web.Request) -> web.Response:
        q = request.query["query"]
        if q == "boom":
            return web.Response(status=503)
        if q == "hang":
            return await hang(request)
        return web.json_response({"status": "success", "data": answers[q]})

    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    yield port  # type: ignore[misc]
    await runner.cleanup()


async def test_prometheus_answers(prometheus: int, session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{prometheus}"
    assert await query_prometheus(session, PrometheusSource(url, "scalar"), TIMEOUT) == 42.5
    assert await query_prometheus(session, PrometheusSource(url, "one"), TIMEOUT) == 7
    failures = (
        ("none", "single sample vector"),
        ("two", "single sample vector"),
        ("matrix", "unsupported prometheus query result type"),
        ("boom", "HTTP 503"),
    )
    for query, message in failures:
        with pytest.raises(PrometheusError, match=message):
            await query_prometheus(session, PrometheusSource(url, query), TIMEOUT)
    with pytest.raises(TimeoutError):
        await query_prometheus(session, PrometheusSource(url, "hang"), TIMEOUT)
    with pytest.raises(PrometheusError, match="invalid prometheus server URL"):
        await query_prometheus(session, PrometheusSource("ftp://x", "scalar"), TIMEOUT)


def test_the_kept_pod_answers_like_the_whole_one() -> None:
    for whole in (pod("a", "10.0.0.1"), pod("b", "10.0.0.2", ready=False), pod("c", "10.0.0.3", restarts=2)):
        whole = {**whole, "spec": {"containers": [{"name": "engine", "image": "vllm", "args": ["x"] * 50}]}}
        kept = pod_kept(whole)
        assert "spec" not in kept
        assert (is_ready(kept), is_disrupted(kept)) == (is_ready(whole), is_disrupted(whole))
        assert kept["metadata"] == whole["metadata"]
        assert kept["status"]["podIP"] == whole["status"]["podIP"]
        assert kept["status"]["startTime"] == whole["status"]["startTime"]
