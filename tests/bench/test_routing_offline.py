"""``bench/routing/offline.py``'s modelled router: the ``Partition`` bound."""

from __future__ import annotations

import random
from typing import Any

from ferry_mock_engine.kvcache import BlockPool
from ferry_mock_engine.profiles import profile_named
from ferry_mock_engine.simulator import Simulator

from tests.support.benchmarks import bench_module

offline = bench_module("routing.offline")


def fleet_of(engines: int) -> Any:
    profile = profile_named("deepseek-r1-distill-qwen-7b-a100")
    return offline.Fleet(
        [
            Simulator(profile, BlockPool(64, 16), max_num_seqs=8, max_num_batched_tokens=2048)
            for _ in range(engines)
        ],
        random.Random(1),
    )


def test_partition_keeps_each_system_prompt_on_one_engine_and_deals_the_groups_evenly() -> None:
    fleet = fleet_of(3)
    systems = [[1000 * g + t for t in range(32)] for g in range(6)]
    order = [0, 1, 0, 2, 3, 1, 4, 5, 5, 0, 2]  # groups as their requests arrive
    picks: dict[int, set[int]] = {}
    for n, group in enumerate(order):
        prompt = systems[group] + [90_000 + n]
        picks.setdefault(group, set()).add(fleet.pick("Partition", prompt))
    assert all(len(engines) == 1 for engines in picks.values())
    dealt = [next(iter(picks[g])) for g in range(6)]
    assert dealt == [0, 1, 2, 0, 1, 2]  # round-robin in order of first arrival
