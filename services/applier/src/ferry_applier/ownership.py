"""Field ownership of a child created by POST, handed to server-side apply on its first later apply.

A child is created with a plain POST where nothing exists yet: the API server then parses no YAML
and merges nothing (about 1 ms of its CPU per child, ``bench/reconcile/README.md``). But a POST is
an ``Update`` operation: its fields belong to the manager's ``Update`` entry in ``managedFields``,
and a later server-side apply by the same manager never prunes a field it no longer sends if that
entry still owns it. So the first apply that finds such an entry folds it into the manager's
``Apply`` entry (what client-go's ``csaupgrade`` does for kubectl's client-side applies) and applies
again: from then on the child is owned as if it had been applied from the start.
"""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def _objects(entry: Entry, manager: str) -> bool:
    """An entry of ``manager``'s for the object's own fields (not a subresource's)."""
    return entry.get("manager") == manager and not entry.get("subresource")


def posted_entries(stored: dict[str, Any], manager: str) -> list[Entry]:
    """``manager``'s ``Update`` entries of the object's own fields."""
    entries = (stored.get("metadata") or {}).get("managedFields") or []
    return [entry for entry in entries if _objects(entry, manager) and entry.get("operation") == "Update"]


def folded(entries: list[Entry], manager: str) -> list[Entry]:
    """``entries`` with ``manager``'s ``Update`` entries folded into its ``Apply`` entry (made from
    the first of them when there is none), in the place of the first of them."""
    mine = [e for e in entries if _objects(e, manager) and e.get("operation") in ("Update", "Apply")]
    if not mine:
        return entries
    applied = next((entry for entry in mine if entry.get("operation") == "Apply"), mine[0])
    fields: dict[str, Any] = {}
    for entry in mine:
        fields = union(fields, entry.get("fieldsV1") or {})
    merged = {**applied, "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": fields}
    result: list[Entry] = []
    for entry in entries:
        if entry is mine[0]:
            result.append(merged)
        elif not any(entry is m for m in mine):
            result.append(entry)
    return result


def union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two ``FieldsV1`` sets as one (nested maps whose leaves are ``{}``)."""
    out = dict(a)
    for key, value in b.items():
        out[key] = union(out[key], value) if key in out else value
    return out
