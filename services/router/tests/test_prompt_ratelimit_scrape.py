"""Prompt extraction (§18.5 ParsePrompt), token buckets (§18.5 ratelimit), metric parsing (§18.2/§18.5)."""

from __future__ import annotations

from typing import Any

import pytest
from ferry_router import errors
from ferry_router.durations import parse_duration
from ferry_router.metrics_scraper import apply_exposition
from ferry_router.prompt import estimate_tokens, extract_prompt
from ferry_router.ratelimit import RateLimiter, TokenBucket
from ferry_router.state.resources import parse_route
from ferry_router.state.table import EndpointMetrics
from ferry_schemas.load import interval_mean, parse_exposition

from .objects import route


@pytest.mark.parametrize(
    ("body", "prompt"),
    [
        ({"prompt": "hello"}, "hello"),
        ({"prompt": ["a", "b"]}, "a\nb"),
        ({"prompt": [1, 2, 3]}, ""),
        ({"messages": [{"role": "user", "content": "hi"}]}, "<|im_start|>user\nhi<|im_end|>\n"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"text": "b"}],
                    }
                ]
            },
            "<|im_start|>user\na\nb<|im_end|>\n",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, ""),
        (
            {"system": "sys", "messages": [{"role": "user", "content": "q"}]},
            "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nq<|im_end|>\n",
        ),
        (
            {"instructions": "be brief", "input": "q"},
            "<|im_start|>developer\nbe brief<|im_end|>\n<|im_start|>user\nq<|im_end|>\n",
        ),
        ({"input": [{"type": "message", "role": "user", "content": "x"}]}, "<|im_start|>user\nx<|im_end|>\n"),
    ],
)
def test_extract_prompt(body: dict, prompt: str) -> None:
    assert extract_prompt(body) == prompt


@pytest.mark.parametrize(
    "body",
    [{}, {"prompt": 3}, {"messages": "hi"}, {"messages": [{"content": "no role"}]}, {"input": 5}],
)
def test_extract_prompt_errors_are_400(body: dict) -> None:
    with pytest.raises(errors.RouterError) as caught:
        extract_prompt(body)
    assert caught.value.status == 400
    assert caught.value.reason == "prompt_parsing"


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("héllo wörld", 3)]
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_token_bucket_allows_capacity_then_refills() -> None:
    bucket = TokenBucket(10, 1.0, now=0.0)
    assert [bucket.take(3, now=0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(3, now=1.1)  # refilled
    assert not TokenBucket(10, 1.0, now=0.0).take(11, now=0.0)  # larger than capacity never passes
    bucket.charge(50, now=1.1)
    assert bucket.available(now=1.1) < 0  # debt


async def test_rate_limiter_per_route_input_and_output() -> None:
    limiter = RateLimiter()
    limit = {"inputTokensPerUnit": 10, "outputTokensPerUnit": 5, "unit": "minute"}
    limiter.on_route("default/r", parse_route(route("r", "m", rate_limit=limit)))
    for _ in range(3):
        await limiter.admit("default/r", "m", 3)
    with pytest.raises(errors.RouterError, match="input token rate limit") as caught:
        await limiter.admit("default/r", "m", 3)
    assert caught.value.status == 429
    await limiter.admit("default/other", "m", 1000)  # no limit on another route
    limiter.on_route(
        "default/o", parse_route(route("o", "m", rate_limit={"outputTokensPerUnit": 5, "unit": "hour"}))
    )
    await limiter.admit("default/o", "m", 1)
    await limiter.record_output("default/o", 100)
    with pytest.raises(errors.RouterError, match="output token rate limit"):
        await limiter.admit("default/o", "m", 1)
    limiter.on_route("default/o", parse_route(route("o", "m")))  # limit removed from the route
    await limiter.admit("default/o", "m", 1)


async def test_rate_limiter_keeps_bucket_when_limit_unchanged() -> None:
    limiter = RateLimiter()
    obj = route("r", "m", rate_limit={"inputTokensPerUnit": 4, "unit": "hour"})
    limiter.on_route("default/r", parse_route(obj))
    await limiter.admit("default/r", "m", 4)
    limiter.on_route("default/r", parse_route(obj))  # same limit re-delivered: no refill
    with pytest.raises(errors.RouterError):
        await limiter.admit("default/r", "m", 1)


EXPOSITION = """# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
vllm:num_requests_waiting{model_name="m"} 2.0
vllm:kv_cache_usage_perc{model_name="m"} 0.25
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 2.0
vllm:time_to_first_token_seconds_count{model_name="m"} 4.0
vllm:inter_token_latency_seconds_sum{model_name="m"} 1.0
vllm:inter_token_latency_seconds_count{model_name="m"} 100.0
"""


def test_parse_exposition_and_interval_means() -> None:
    parsed = parse_exposition(EXPOSITION)
    gauges, hists = parsed.gauges, parsed.hists
    assert gauges == {"running": 3.0, "waiting": 2.0, "kv_cache_usage": 0.25}
    assert hists == {"ttft": (2.0, 4.0), "tpot": (1.0, 100.0)}
    metrics = EndpointMetrics()
    apply_exposition(metrics, EXPOSITION)
    assert (metrics.ttft, metrics.running) == (0.0, 3.0)  # first observation: no interval yet
    apply_exposition(
        metrics,
        EXPOSITION.replace('_sum{model_name="m"} 2.0', '_sum{model_name="m"} 3.0').replace(
            'seconds_count{model_name="m"} 4.0', 'seconds_count{model_name="m"} 6.0'
        ),
    )
    assert metrics.ttft == pytest.approx(0.5)
    assert metrics.ttft_load == 5.0  # running + waiting at the reading that brought the samples
    apply_exposition(metrics, "sglang:num_queue_reqs 5\n")  # other engine names; absent gauges -> 0
    assert (metrics.waiting, metrics.running, metrics.ttft) == (5.0, 0.0, pytest.approx(0.5))
    assert metrics.ttft_load == 5.0  # no new samples: still the load they were measured at


@pytest.mark.parametrize(
    ("previous", "now", "mean"),
    [
        (None, (1.0, 2.0), 0.0),
        ((1.0, 2.0), (1.0, 2.0), 0.0),
        ((1.0, 2.0), (3.0, 4.0), 1.0),
        ((5.0, 10.0), (1.0, 4.0), 0.25),
    ],
)
def test_interval_mean(previous: tuple | None, now: tuple, mean: float) -> None:
    assert interval_mean(previous, now) == pytest.approx(mean)


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10), ("1m30s", 90), ("250ms", 0.25), ("1h", 3600), ("0", 0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("10 parsecs")


class MemoryKV:
    """Just enough of ``nats.js.kv.KeyValue`` for SharedBucket: get/create/update with revisions."""

    def __init__(self, fail: bool = False, conflicts: int = 0) -> None:
        self.data: dict[str, tuple[bytes, int]] = {}
        self.fail = fail
        self.conflicts = conflicts  # updates to refuse as if another replica wrote first

    async def get(self, key: str) -> Any:
        from nats.js.errors import KeyNotFoundError

        if self.fail:
            raise ConnectionError("kv down")
        if key not in self.data:
            raise KeyNotFoundError
        value, revision = self.data[key]
        return type("Entry", (), {"value": value, "revision": revision})()

    async def create(self, key: str, value: bytes) -> int:
        self.data[key] = (value, 1)
        return 1

    async def update(self, key: str, value: bytes, last: int) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        if self.conflicts:
            self.conflicts -= 1
            raise KeyWrongLastSequenceError
        assert self.data[key][1] == last
        self.data[key] = (value, last + 1)
        return last + 1


GLOBAL = {"inputTokensPerUnit": 10, "unit": "hour", "global": {"redis": {"address": "ignored:6379"}}}


async def test_global_limit_shares_one_bucket_and_retries_on_conflicts() -> None:
    kv = MemoryKV(conflicts=2)
    a, b = RateLimiter(kv), RateLimiter(kv)  # type: ignore[arg-type]
    for limiter in (a, b):
        limiter.on_route("default/g", parse_route(route("g", "m", rate_limit=GLOBAL)))
    await a.admit("default/g", "m", 4)
    await b.admit("default/g", "m", 4)  # the second replica sees what the first spent
    with pytest.raises(errors.RateLimited):
        await a.admit("default/g", "m", 4)
    assert list(kv.data) == ["default.g.input"]


async def test_global_limit_fails_open_when_the_store_is_down() -> None:
    from ferry_router.ratelimit import STORE_ERRORS

    before = STORE_ERRORS._value.get()
    limiter = RateLimiter(MemoryKV(fail=True))  # type: ignore[arg-type]
    limiter.on_route("default/g", parse_route(route("g", "m", rate_limit=GLOBAL)))
    for _ in range(5):
        await limiter.admit("default/g", "m", 4)
    assert STORE_ERRORS._value.get() == before + 5
