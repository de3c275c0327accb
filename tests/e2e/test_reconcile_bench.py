"""``bench/reconcile`` end to end at one booster, so the benchmark issue 9 is judged by keeps running.

It runs as a user would (``python -m bench.reconcile``) with its own local stack, nats-server and
service processes, and asserts only what one booster must show whatever the machine: the booster
done (not cut off by ``--limit``) and the tables the closing notes quote printed, with every
request the services make counted and none of them a LIST of Ferry's.
"""

from __future__ import annotations

import re

import pytest

from tests.support.benchmarks import run_benchmark

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_reconcile_benchmark_runs_one_booster_to_done() -> None:
    args = ("-m", "bench.reconcile", "1", "--spread", "1", "--no-stages", "--limit", "120")
    out = run_benchmark(*args, timeout=280)
    assert re.search(r"^\s+1\s+1\s+1/1\s+\d", out, re.M), out  # done, no '!' (cut off by --limit)
    for table in ("API-server requests per booster", "Events per booster", "NATS messages per booster"):
        assert table in out, out
    # Ferry's writes, one each: the children, the pod, and the two status applies
    for row in ("POST pods", "APPLY modelservings", "APPLY modelboosters/status", "POST modelroutes"):
        assert re.search(rf"^\s+{re.escape(row)}\s+1\.00$", out, re.M), (row, out)
    lists = [line.split() for line in out.splitlines() if line.split()[:1] == ["LIST"]]
    assert [row[1] for row in lists] in ([], ["limitranges"]), out  # the API server's own admission
