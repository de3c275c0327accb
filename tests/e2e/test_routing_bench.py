"""``bench/routing/run.py`` end to end for every plugin set, at a workload small enough for the suite.

The unit tests check each set's configuration; this runs each one through real routers, simulated
engines, the KV-event sidecars and a nats-server, as the benchmark does, so a set that cannot run
(as the ``/filter`` set's log path once could not) fails here rather than an hour into a benchmark.
It asserts only that every set served every request: at six requests the figures are noise.
"""

from __future__ import annotations

import re

import pytest

from tests.support.benchmarks import bench_module, run_benchmark

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

run = bench_module("routing.run")

SETS = [*run.PLUGIN_SETS, *run.EXTRA_SETS]
ROW = re.compile(r"^(?P<label>.+?)\s+\|\s+(?P<rps>[\d.]+)\s+[\d.]+x\s+\|.*\|\s+(?P<failed>\d+)$")


def test_every_plugin_set_serves_a_small_long_prompt_workload() -> None:
    out = run_benchmark(
        "bench/routing/run.py",
        *("--groups", "2", "--per-group", "3", "--engines", "2", "--output", "8"),
        *("--time-scale", "0.5", "--workloads", "long", "--sets", ",".join(SETS)),
        timeout=240,
    )
    table = out.split("long: 6 requests", 1)[1].split("where the first token waited", 1)[0]
    rows = {m["label"]: m for line in table.splitlines() if (m := ROW.match(line.strip()))}
    assert sorted(rows) == sorted(SETS), out
    for label, row in rows.items():
        assert row["failed"] == "0", f"{label}: {row.group(0)}"
        assert float(row["rps"]) > 0, f"{label}: {row.group(0)}"
