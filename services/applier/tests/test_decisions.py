"""The pure decisions of the workload, as tables from spec/serving.md §6-§7."""

from __future__ import annotations

import pytest
from ferry_applier.workload.plan import (
    GroupView,
    InstanceView,
    Scored,
    group_rolling_update,
    group_scale_down,
    missing_ordinals,
    role_rolling_update,
    role_scale_down,
)
from ferry_applier.workload.spec import RoleSpec, resolve, resolve_partition


@pytest.mark.parametrize(
    ("existing", "expected", "limit", "found"),
    [
        ([], 0, 3, []),  # expected 0
        ([], 3, 0, []),  # limit 0
        ([], 3, 3, [0, 1, 2]),  # empty
        ([0, 1, 2], 3, 3, []),  # continuous
        ([0, 2, 4], 5, 5, [1, 3]),  # gaps
        ([0, 2, 4], 5, 1, [1]),  # limit 1
        ([2, 0, 2], 4, 4, [1, 3]),  # unsorted duplicates
        ([-1, 1, 10], 3, 3, [0, 2]),  # out-of-range values
        ([0, 1], 2**31 - 1, 2, [2, 3]),  # huge expected, computed lazily
    ],
)
def test_missing_ordinals(existing: list[int], expected: int, limit: int, found: list[int]) -> None:
    assert missing_ordinals(existing, expected, limit) == found


@pytest.mark.parametrize(
    ("value", "total", "partition"),
    [(None, 3, 0), (3, 3, 3), ("50%", 3, 2), ("50%", 4, 2), ("1%", 10, 1), ("100%", 5, 5), ("0%", 5, 0)],
)
def test_partition_rounds_up(value: int | str | None, total: int, partition: int) -> None:
    assert resolve_partition(value, total) == partition


def test_max_unavailable_rounds_down_and_rejects_garbage() -> None:
    assert resolve("50%", 3, round_up=False) == 1
    assert resolve("2", 3, round_up=False) == 2
    with pytest.raises(ValueError, match="not an int or percentage"):
        resolve("lots", 3, round_up=False)


def _running(
    *ordinals: int, costs: dict[int, int] | None = None, not_ready: tuple[int, ...] = ()
) -> list[Scored]:
    costs = costs or {}
    return [Scored(o, 0 if o in not_ready else 1, costs.get(o, 0)) for o in ordinals]


def _kept(candidates: list[Scored], deleted: list[int]) -> set[int]:
    return {s.ordinal for s in candidates} - set(deleted)


@pytest.mark.parametrize(
    ("candidates", "want", "partition", "kept"),
    [
        # TestScaleDownServingGroups
        (_running(0, 1, 2, 3), 2, 0, {0, 1}),
        (_running(0, 1, 2), 1, 0, {0}),
        (_running(0, 1, 2, 3, 4), 3, 0, {0, 1, 2}),
        (_running(0, 1, 2), 3, 0, {0, 1, 2}),
        (_running(0, 2, 5, 8), 2, 0, {0, 2}),
        # WithPriorityAndDeletionCost
        (_running(0, 1, 2, 3, not_ready=(2,)), 2, 0, {0, 1}),
        (_running(0, 1, 2, 3, costs={0: 100, 1: 50, 2: 0, 3: 75}), 2, 0, {0, 3}),
        (_running(0, 1, 2, 3, costs={0: 10, 1: 1000, 2: 20, 3: 30}, not_ready=(1,)), 2, 0, {2, 3}),
        (
            _running(0, 1, 2, 3, 4, costs={0: 100, 1: 0, 2: 50, 3: 0, 4: 200}, not_ready=(1, 2, 3, 4)),
            2,
            0,
            {0, 4},
        ),
        (_running(0, 1, 2, 3, not_ready=(0, 1, 2, 3)), 2, 0, {0, 1}),
        (_running(0, 1, 2, 3, costs={1: -100}), 2, 0, {0, 2}),
        # WithPartition
        (_running(0, 1, 2, 3, 4, costs={0: 1, 1: 1, 2: 1, 3: 100, 4: 100}), 3, 3, {0, 1, 2}),
        (_running(0, 1, 2, 3, 4, not_ready=(1,)), 3, 3, {0, 1, 2}),
        (_running(0, 1, 2, 3, costs={0: 100, 1: 50, 2: 0, 3: 200}), 2, 5, {0, 3}),
        (_running(0, 1, 2, 3, 4, costs={0: 100, 1: 50, 2: 0, 3: 200, 4: 150}), 2, 3, {0, 1}),
    ],
)
def test_group_scale_down(candidates: list[Scored], want: int, partition: int, kept: set[int]) -> None:
    assert _kept(candidates, group_scale_down(candidates, want, partition)) == kept


def _instances(statuses: str, ordinals: list[int] | None = None) -> list[tuple[Scored, bool]]:
    """R = Running, C = Creating, N = NotFound, D = Deleting."""
    ordinals = ordinals if ordinals is not None else list(range(len(statuses)))
    return [(Scored(o, 1 if s == "R" else 0, 0), s == "D") for o, s in zip(ordinals, statuses, strict=True)]


@pytest.mark.parametrize(
    ("instances", "want", "partition", "kept"),
    [
        (_instances("RRRR"), 2, 0, {0, 1}),
        (_instances("RRR"), 1, 0, {0}),
        (_instances("RRRR", [0, 2, 5, 8]), 2, 0, {0, 2}),
        (_instances("RRRR", [1, 3, 5, 8]), 2, 0, {1, 3}),  # partition without RoleRollingUpdate is 0
        (_instances("RCR"), 2, 0, {0, 2}),
        (_instances("RNR"), 2, 0, {0, 2}),
        (_instances("CRNR"), 2, 0, {1, 3}),
        (_instances("RRRRR"), 3, 3, {0, 1, 2}),  # partition beats ordinal order
    ],
)
def test_role_scale_down(
    instances: list[tuple[Scored, bool]], want: int, partition: int, kept: set[int]
) -> None:
    deleted = role_scale_down(instances, want, partition)
    assert {s.ordinal for s, _ in instances} - set(deleted) == kept


def test_role_scale_down_skips_when_deleting_instances_already_make_up_the_difference() -> None:
    assert role_scale_down(_instances("RRD"), 2, 0) == []


def _groups(spec: str, revision: str = "old") -> list[GroupView]:
    """Per group: R = running outdated, C = not running outdated, N = new running, U = new unavailable."""
    views = []
    for ordinal, kind in enumerate(spec):
        rev = "new" if kind in "NU" else revision
        views.append(GroupView(ordinal, kind in "RN", rev))
    return views


@pytest.mark.parametrize(
    ("groups", "replicas", "max_unavailable", "partition", "deleted"),
    [
        ("", 0, 1, 0, []),
        ("CC", 2, 2, 0, [1, 0]),  # 2 not running, budget 2
        ("RR", 2, 1, 0, [1]),  # 2 running, budget 1
        ("RCCC", 4, 2, 0, [3, 2]),  # not-running outdated go first
        ("RRRR", 4, 2, 0, [3, 2]),
        ("RRUU", 4, 2, 0, []),  # the new groups are not up yet: no budget
        ("RRNN", 4, 2, 0, [1, 0]),
        ("RRRRR", 5, 5, 3, [4, 3]),  # partition protects 0..2 whatever the budget
        ("RRR", 3, 1, 3, []),
    ],
)
def test_group_rolling_update(
    groups: str, replicas: int, max_unavailable: int, partition: int, deleted: list[int]
) -> None:
    assert group_rolling_update(_groups(groups), "new", replicas, max_unavailable, partition) == deleted


def _views(spec: str, ordinals: list[int] | None = None) -> list[InstanceView]:
    """R/C = outdated running/creating, N/U = current running/unavailable, D = deleting, ? = no hash."""
    ordinals = ordinals if ordinals is not None else list(range(len(spec)))
    views = []
    for ordinal, kind in zip(ordinals, spec, strict=True):
        role_hash = {"R": "old", "C": "old", "N": "new", "U": "new", "D": "old", "?": ""}[kind]
        views.append(InstanceView(ordinal, role_hash, kind in "RN?", kind == "D"))
    return views


@pytest.mark.parametrize(
    ("views", "replicas", "max_unavailable", "partition", "deleted", "outdated"),
    [
        ([], 1, 1, 0, [], False),  # empty group
        (_views("NU"), 2, 1, 0, [], False),  # current hash, even unavailable
        (_views("RRR"), 3, None, 0, [2, 1, 0], True),  # nil maxUnavailable: everything
        (_views("RCRC"), 4, 2, 0, [3, 1], True),  # not running first, then higher ordinal
        (_views("URRR"), 4, 2, 0, [3], True),  # a new unavailable one uses the budget
        (_views("DURR"), 4, 2, 0, [], True),  # deleting + new creating use all of it
        (_views("RR"), 2, "many", 0, [], True),  # invalid maxUnavailable
        (_views("??"), 2, 1, 0, [], False),  # unknown hash: never forced
        (_views("RRRR", [1, 3, 5, 8]), 4, None, 2, [8, 5], True),  # role partition 2
        (_views("RR"), 2, None, 2, [], True),  # all protected but still outdated
    ],
)
def test_role_rolling_update(
    views: list[InstanceView],
    replicas: int,
    max_unavailable: int | str | None,
    partition: int,
    deleted: list[int],
    outdated: bool,
) -> None:
    role = RoleSpec("prefill", replicas, 0, max_unavailable=max_unavailable)
    assert role_rolling_update(views, "new", role, partition) == (deleted, outdated)
