"""CPU per bus message of the applier's object view, without a bus: the view's share of a reconcile run.

    uv run python -m bench.reconcile.view            # 200 boosters' messages, 7 passes
    uv run python -m bench.reconcile.view 500 --passes 9

Builds the object messages the watcher publishes for N boosters (one vLLM backend each, as
``bench.reconcile`` creates them: the booster, its ModelServing, ModelServer and ModelRoute, the
group's pod and Service, the ModelServing's status write), keeps those the applier views, and feeds
their bytes to an :class:`~ferry_schemas.runtime.view.ObjectView` configured as the applier's
(packed, its projections and indexed labels, a change callback), as its stream follower does: decode,
project, pack, index, call back. Prints the process CPU time per message of each pass (a fresh view
each) and their median and minimum; on a shared machine read the minimum, and compare two trees by
running each a few times, interleaved.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import uuid
from typing import Any

from ferry_applier.projections import PROJECTIONS
from ferry_applier.service import SELECTED_BY, VIEWED
from ferry_converter.desired import desired_set
from ferry_schemas import workload
from ferry_schemas.bus import ObjectEvent
from ferry_schemas.runtime.view import Change, ObjectView

from tests.support.cluster import booster

JSON = dict[str, Any]
RESOURCES = {
    "ModelBooster": "modelboosters",
    "ModelServing": "modelservings",
    "ModelServer": "modelservers",
    "ModelRoute": "modelroutes",
    "Pod": "pods",
    "Service": "services",
    "PodGroup": "podgroups",
}
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Message:
    """What the view's handler reads of a bus message."""

    __slots__ = ("data", "headers", "subject")

    def __init__(self, event: ObjectEvent) -> None:
        self.data = event.to_bytes()
        self.subject = event.subject
        self.headers = {"traceparent": TRACEPARENT, "Nats-Msg-Id": event.msg_id}


class Stored:
    """Gives objects what the API server adds when it stores them."""

    def __init__(self) -> None:
        self.version = 100

    def __call__(self, obj: JSON) -> JSON:
        stored = copy.deepcopy(obj)
        self.version += 1
        meta = stored["metadata"]
        meta |= {
            "uid": str(uuid.uuid4()),
            "resourceVersion": str(self.version),
            "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "managedFields": [
                {
                    "manager": "ferry-applier",
                    "operation": "Apply",
                    "apiVersion": stored["apiVersion"],
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {"f:labels": {f"f:{k}": {} for k in meta.get("labels") or {}}}
                    },
                }
            ],
        }
        return stored


def events(n: int) -> list[ObjectEvent]:
    """The object changes of ``n`` boosters, in the order a burst publishes them."""
    stored = Stored()
    out: list[ObjectEvent] = []
    for i in range(n):
        owner = ObjectEvent.from_object("ADDED", "modelboosters", stored(booster(f"m{i:04d}", "bench")))
        out.append(owner)
        for child in desired_set(owner).children:
            obj = stored(child)
            event = ObjectEvent.from_object("ADDED", RESOURCES[obj["kind"]], obj)
            out.append(event)
            if obj["kind"] != "ModelServing":
                continue
            group = desired_set(event).workload
            assert group is not None
            out += [
                ObjectEvent.from_object("ADDED", RESOURCES[o["kind"]], stored(o))
                for o in workload.render_group(group, 0)
            ]
            written = copy.deepcopy(obj)
            written["status"] = {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}
            written["metadata"]["resourceVersion"] = str(stored.version + 1)
            stored.version += 1
            out.append(ObjectEvent.from_object("MODIFIED", "modelservings", written))
    return out


def one_pass(messages: list[Message]) -> float:
    """CPU seconds per message of feeding ``messages`` to a fresh applier-like view."""
    view = ObjectView(None, VIEWED, project=PROJECTIONS, pack=True, indexed_labels=SELECTED_BY)  # type: ignore[arg-type]

    def on_change(change: Change) -> None:
        change.context  # noqa: B018 - what the applier reads of a change it queues

    view.on_change(on_change)
    started = time.process_time()
    for message in messages:
        view._handle(message.subject, message)  # type: ignore[arg-type]
    return (time.process_time() - started) / len(messages)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("boosters", nargs="?", type=int, default=200)
    parser.add_argument("--passes", type=int, default=7)
    args = parser.parse_args()
    viewed = {str(r) for r in VIEWED}
    messages = [Message(e) for e in events(args.boosters) if e.resource in viewed]
    runs = [one_pass(messages) * 1e6 for _ in range(args.passes)]
    print(f"{len(messages)} messages of {args.boosters} boosters, CPU µs per message")
    print("passes  " + " ".join(f"{r:.1f}" for r in runs))
    print(f"median {statistics.median(runs):.1f}  min {min(runs):.1f}")


if __name__ == "__main__":
    main()
