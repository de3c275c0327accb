"""Converter throughput: conversions per second (a benchmark that prints figures, not a test).

    uv run python bench/converter/run.py [--seconds 1.0]

For each Kthena HEAD converter input, and for a 16-backend booster built from ``model.yaml``,
it measures the pure conversion (``convert_booster``) and the whole per-message work
(``desired_set``: schema validation, conversion, msg id) plus the serialised size.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import yaml
from ferry_converter.booster.convert import convert_booster
from ferry_converter.desired import desired_set
from ferry_converter.serving.convert import convert_serving
from ferry_local.paths import shared_dir
from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.workload import render_group

INPUT = shared_dir() / "reference" / "kthena" / "head" / "convert-testdata" / "input"


def rate(work: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """(operations per second, mean microseconds per operation) over about ``seconds``."""
    work()  # warm up
    count, started = 0, time.perf_counter()
    deadline = started + seconds
    while True:
        work()
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            break
    elapsed = now - started
    return count / elapsed, elapsed / count * 1e6


def sixteen_backends() -> dict[str, Any]:
    base = yaml.safe_load((INPUT / "model.yaml").read_text())
    backend = base["spec"].pop("backend")
    backends = []
    for index in range(16):
        item = copy.deepcopy(backend)
        item["name"] = f"b{index}"
        item["routeWeight"] = 5 + index
        item["loraAdapters"] = [{"name": f"lora-{index % 4}", "artifactURL": f"s3://b/lora-{index % 4}"}]
        backends.append(item)
    base["metadata"]["name"] = "bench-16"
    base["spec"]["backends"] = backends
    base["spec"]["autoscalingPolicy"] = {"metrics": [{"metricName": "m", "targetValue": 10}]}
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per case")
    args = parser.parse_args()
    cases = [(p.stem, yaml.safe_load(p.read_text())) for p in sorted(INPUT.glob("*.yaml"))]
    cases.append(("16-backend booster", sixteen_backends()))
    print(f"{'input':<58} {'children':>8} {'convert/s':>10} {'desired/s':>10} {'µs/msg':>8} {'bytes':>8}")
    for name, obj in cases:
        event = ObjectEvent.from_object("ADDED", Resource.MODEL_BOOSTERS, obj)
        result = convert_booster(obj)
        assert not result.errors, [str(e) for e in result.errors]
        pure, _ = rate(lambda obj=obj: convert_booster(obj), args.seconds)  # type: ignore[misc]
        whole, micros = rate(lambda event=event: desired_set(event).to_bytes(), args.seconds)  # type: ignore[misc]
        size = len(desired_set(event).to_bytes())
        print(f"{name:<58} {len(result.children):>8} {pure:>10.0f} {whole:>10.0f} {micros:>8.0f} {size:>8}")
    pd = yaml.safe_load((INPUT / "pd-disaggregated-model-npu.yaml").read_text())
    serving = convert_booster(pd).children[0]
    workload, _ = convert_serving(serving)
    assert workload is not None
    objects = len(render_group(workload, 0))
    rendered, _ = rate(lambda: render_group(workload, 0), args.seconds)
    converted, _ = rate(lambda: convert_serving(serving), args.seconds)
    print(
        f"ModelServing {serving['metadata']['name']}: convert_serving {converted:.0f}/s, "
        f"render_group {rendered:.0f} groups/s ({objects} objects per group)"
    )


if __name__ == "__main__":
    main()
