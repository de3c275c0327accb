"""Sliding windows over past recommendations and applied counts (spec §4.3, §3.5).

* A *record* window keeps ``(t, v)`` entries; an entry is live while ``t + W >= now``.
* A *line-chart* window models a step function: ``append(v)`` at ``t`` retires the previous
  current value stamped ``t`` (the moment it stopped being in effect). ``best(x)`` is the extreme of
  ``x``, the current value (while ``t_current + 2W >= now``) and the retired values still live.
* A *snapshot* window keeps values and answers the newest one that is at least ``fresh`` old and at
  most ``expire`` old (the histogram baseline).

A window of length 0 is disabled and answers ``None``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
Pick = Callable[[int, int], int]


class RecordWindow:
    """Max or min of the recommendations made in the last ``length`` seconds."""

    def __init__(self, length: float, pick: Pick) -> None:
        self.length = length
        self._pick = pick
        self._entries: deque[tuple[float, int]] = deque()

    def append(self, value: int, now: float) -> None:
        if self.length <= 0:
            return
        self._entries.append((now, value))
        self._expire(now)

    def best(self, now: float) -> int | None:
        if self.length <= 0:
            return None
        self._expire(now)
        result: int | None = None
        for _, value in self._entries:
            result = value if result is None else self._pick(result, value)
        return result

    def _expire(self, now: float) -> None:
        while self._entries and self._entries[0][0] + self.length < now:
            self._entries.popleft()

    def dump(self) -> list[list[float]]:
        return [[t, v] for t, v in self._entries]

    def load(self, entries: list[list[float]]) -> None:
        self._entries = deque((float(t), int(v)) for t, v in entries)


class LineChartWindow:
    """Extreme of a step function (the applied count) over the last ``length`` seconds."""

    def __init__(self, length: float, pick: Pick) -> None:
        self.length = length
        self._pick = pick
        self._retired: deque[tuple[float, int]] = deque()
        self._current: tuple[float, int] | None = None

    def append(self, value: int, now: float) -> None:
        if self._current is not None:
            self._retired.append((now, self._current[1]))
        self._current = (now, value)
        self._expire(now)

    def best(self, value: int, now: float) -> int | None:
        """The extreme of ``value`` and the window; ``None`` when the window is disabled."""
        if self.length <= 0:
            return None
        self._expire(now)
        result = value
        if self._current is not None and self._current[0] + 2 * self.length >= now:
            result = self._pick(result, self._current[1])
        for _, retired in self._retired:
            result = self._pick(result, retired)
        return result

    def _expire(self, now: float) -> None:
        while self._retired and self._retired[0][0] + self.length < now:
            self._retired.popleft()

    def dump(self) -> dict[str, object]:
        current = list(self._current) if self._current is not None else None
        return {"retired": [[t, v] for t, v in self._retired], "current": current}

    def load(self, data: dict[str, object]) -> None:
        retired = data.get("retired") or []
        current = data.get("current")
        self._retired = deque((float(t), int(v)) for t, v in retired)  # type: ignore[attr-defined]
        self._current = (float(current[0]), int(current[1])) if current else None  # type: ignore[index]


def max_records(length: float) -> RecordWindow:
    return RecordWindow(length, max)


def min_records(length: float) -> RecordWindow:
    return RecordWindow(length, min)


def max_line_chart(length: float) -> LineChartWindow:
    return LineChartWindow(length, max)


def min_line_chart(length: float) -> LineChartWindow:
    return LineChartWindow(length, min)


class SnapshotWindow(Generic[T]):
    """The newest value that is at least ``fresh`` seconds old and at most ``expire`` seconds old."""

    def __init__(self, fresh: float, expire: float) -> None:
        self.fresh = fresh
        self.expire = expire
        self._entries: deque[tuple[float, T]] = deque()

    def append(self, value: T, now: float) -> None:
        if self.expire <= 0:
            return
        self._entries.append((now, value))
        self._drop(now)

    def last_unfresh(self, now: float) -> T | None:
        if self.expire <= 0:
            return None
        self._drop(now)
        found: T | None = None
        for stamp, value in self._entries:
            if stamp + self.fresh <= now:
                found = value
        return found

    def _drop(self, now: float) -> None:
        while self._entries and self._entries[0][0] + self.expire < now:
            self._entries.popleft()
