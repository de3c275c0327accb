"""What the pipeline (converter, applier) last said about an owner's current generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ferry_status.bus_state import DesiredRecord, ResultRecord


@dataclass(frozen=True)
class Outcome:
    """``failed`` with the refusing side's reason and message, or ``applied`` once children exist."""

    failed: bool
    message: str
    applied: bool
    reason: str = ""


def pipeline_outcome(
    owner: dict[str, Any], desired: DesiredRecord | None, result: ResultRecord | None
) -> Outcome:
    """Failed/applied from the last desired set and apply result that belong to ``owner`` (by uid)."""
    uid = (owner.get("metadata") or {}).get("uid")
    if desired is not None and desired.uid != uid:
        desired = None
    if result is not None and result.uid != uid:
        result = None
    if desired is not None and desired.errors:
        reason = desired.errors[0].reason or "ConversionFailed"
        return Outcome(True, "; ".join(str(e) for e in desired.errors), False, reason)
    # an apply result older than the desired set says nothing about the current children
    if result is not None and desired is not None and result.generation < desired.generation:
        result = None
    if result is not None and not result.ok:
        message = result.message or result.reason or "applying the children failed"
        return Outcome(True, message, False, result.reason or "ApplyFailed")
    return Outcome(False, "", result is not None and result.ok)
