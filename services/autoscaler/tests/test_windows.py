"""Spec §7.4: ``sliding_window_test.go`` (t in seconds, W = 10 s) and §7.7's MaxCorr case."""

from __future__ import annotations

from ferry_autoscaler.algorithm.windows import (
    SnapshotWindow,
    max_line_chart,
    max_records,
    min_line_chart,
    min_records,
)


def test_max_record_window() -> None:
    window = max_records(10)
    assert window.best(0) is None
    for value, at in ((6, 1), (3, 3), (5, 5), (2, 7)):
        window.append(value, at)
    assert [window.best(t) for t in (7, 12, 14, 16, 18)] == [6, 5, 5, 2, None]


def test_min_record_window() -> None:
    window = min_records(10)
    for value, at in ((6, 1), (3, 3), (5, 5), (7, 7)):
        window.append(value, at)
    assert [window.best(t) for t in (7, 12, 14, 16, 18)] == [3, 3, 5, 7, None]
    disabled = min_records(0)
    disabled.append(1, 1)
    assert disabled.best(1) is None


def test_max_line_chart_window() -> None:
    window = max_line_chart(10)
    assert window.best(6, 0) == 6
    for value, at in ((6, 1), (3, 3), (5, 5), (2, 7)):
        window.append(value, at)
    assert [window.best(0, t) for t in (7, 12, 14, 16, 18)] == [6, 6, 5, 5, 2]
    assert window.best(3, 18) == 3
    assert window.best(0, 26) == 2
    assert window.best(0, 28) == 0


def test_min_line_chart_window() -> None:
    window = min_line_chart(10)
    for value, at in ((6, 1), (3, 3), (9, 5), (4, 7)):
        window.append(value, at)
    assert [window.best(10, t) for t in (7, 12, 14, 16, 18)] == [3, 3, 3, 4, 4]
    assert window.best(2, 18) == 2
    assert window.best(10, 26) == 4
    assert window.best(10, 28) == 10
    assert min_line_chart(0).best(5, 0) is None


def test_snapshot_window() -> None:
    window: SnapshotWindow[str] = SnapshotWindow(fresh=10, expire=15)
    for value, at in (("foo", 1), ("bar", 3), ("quz", 5), ("abc", 7)):
        window.append(value, at)
    assert [window.last_unfresh(t) for t in (7, 12, 14, 16, 18, 21, 23)] == [
        None, "foo", "bar", "quz", "abc", "abc", None,
    ]  # fmt: skip
    zero: SnapshotWindow[str] = SnapshotWindow(fresh=0, expire=0)
    zero.append("x", 1)
    assert zero.last_unfresh(1) is None


def test_max_corrected_window_keeps_the_highest_applied_count() -> None:
    window = max_line_chart(3600)
    for at, value in enumerate((3, 8, 5)):
        window.append(value, at)
    assert window.best(4, 3) == 8
