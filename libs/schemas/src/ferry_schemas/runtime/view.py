"""An in-process, indexed view of ``FERRY_OBJECTS``: the informer cache, with the bus as its source.

Each resource is read by one ordered push consumer starting at the last message per subject
(:class:`~ferry_schemas.runtime.follow.StreamFollower`, as the router's feed), so the view first
loads the current state of the world (the *snapshot*) and then follows changes. Every replica
reads everything (nothing durable, nothing acked): the view is rebuilt from the stream on start.

Reads never touch the API server:

* :meth:`ObjectView.get` — one object by resource, namespace and name;
* :meth:`ObjectView.list` — a resource's objects in a namespace, optionally by label selector
  (through a (namespace, label, value) index: the cost follows the objects selected, not the
  objects in the namespace; ``indexed_labels`` limits it to the keys the service selects by, and a
  packed record then keeps only those labels decoded: the others are matched on the object read);
* :meth:`ObjectView.owned` — the objects whose ownerReferences name a uid (by owner uid index).

:meth:`ObjectView.on_change` registers ``callback(change)`` for every change after it was applied,
snapshot included (a :class:`Change`: the event, whether the object kept stayed the same but for its
resourceVersion, the message's headers). That is the informer's event handler: the applier re-queues
a changed child's owner from it, as controller-runtime's informer feeds its work queue, so each
object message reaches a service once. ``synced`` turns true once every resource delivered its
snapshot; a service's ``/readyz`` waits for it.

Objects are stored as the API server sent them minus ``metadata.managedFields`` (kept small), except
for the resources named in ``keep_managed_fields`` (the applier reads who owns ``spec.replicas``),
then through the resource's ``project`` function when one is given (keep only what the service
reads: memory grows with the fleet). With ``pack=True`` objects are kept as compressed JSON
(:mod:`ferry_schemas.runtime.packed`, a few hundred bytes an object instead of tens of KB) and decoded
on read: readers get exactly the object stored.
A view may lag the API server by a moment; writers stay safe because deletes carry uid
preconditions and creates are server-side applies on fixed names.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import propagate
from opentelemetry.context import Context
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from ferry_schemas.bus import OBJECTS_PREFIX, OBJECTS_STREAM, ObjectEvent, encode_token, object_filter
from ferry_schemas.runtime.follow import StreamFollower
from ferry_schemas.runtime.packed import Packed, PackedStore

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ObjKey = tuple[str, str, str]
"""(resource, namespace, name)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One change the view applied."""

    event: ObjectEvent
    same: bool = False
    """What the view keeps of the object is the same as before but for its resourceVersion (a status
    write, a relist): nothing a reader of the view could act on changed."""
    headers: Mapping[str, str] | None = None
    """The bus message's headers (its trace context); None when the change was not read off the bus."""

    @property
    def context(self) -> Context | None:
        """The trace context the change's message carried."""
        return trace_context(self.headers)


def trace_context(headers: Mapping[str, str] | None) -> Context | None:
    """The trace context (``traceparent``) in a bus message's headers; None without headers."""
    return propagate.extract(headers) if headers else None


ChangeCallback = Callable[[Change], None]

VIEW_EVENTS = Counter("ferry_view_events_total", "Object events applied to the view.", ["resource", "type"])
VIEW_BAD_EVENTS = Counter(
    "ferry_view_bad_events_total", "Bus messages that could not be decoded.", ["resource"]
)
VIEW_OBJECTS = Gauge("ferry_view_objects", "Objects held in the view.", ["resource"])


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def owner_uids(obj: Mapping[str, Any]) -> list[str]:
    return [str(ref.get("uid")) for ref in (obj.get("metadata") or {}).get("ownerReferences") or []]


def _versionless(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
    return {**obj, "metadata": meta}


def matches(obj: Mapping[str, Any], selector: Mapping[str, str] | None) -> bool:
    """Equality-based label selection (what Ferry's selectors use)."""
    if not selector:
        return True
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _owners(stored: Obj | Packed) -> Iterable[str]:
    return stored.owners if isinstance(stored, Packed) else owner_uids(stored)


def _labels(stored: Obj | Packed) -> Iterable[tuple[str, str]]:
    return stored.label_pairs() if isinstance(stored, Packed) else labels_of(stored).items()


def _selected(stored: Obj | Packed, selector: Mapping[str, str] | None) -> bool:
    if not isinstance(stored, Packed):
        return matches(stored, selector)
    labels = dict(stored.label_pairs())
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _names(held: str | set[str] | None) -> Collection[str]:
    if held is None:
        return ()
    return (held,) if isinstance(held, str) else held


def _add(index: dict[Any, str | set[str]], key: Any, name: str) -> None:
    held = index.get(key)
    if held is None:
        index[key] = name
    elif isinstance(held, str):
        if held != name:
            index[key] = {held, name}
    else:
        held.add(name)


def _discard(index: dict[Any, str | set[str]], key: Any, name: str) -> None:
    held = index.get(key)
    if isinstance(held, str):
        if held == name:
            del index[key]
    elif held is not None:
        held.discard(name)
        if len(held) == 1:
            index[key] = next(iter(held))
        elif not held:
            del index[key]


def _same(old: Obj | Packed, new: Obj | Packed) -> bool:
    """The same object but for its resourceVersion."""
    if isinstance(old, Packed) and isinstance(new, Packed):
        return old.blob == new.blob
    if isinstance(old, Packed) or isinstance(new, Packed):
        return False
    return _versionless(old) == _versionless(new)


class ObjectView:
    """See the module docstring. ``namespace`` limits the view to one namespace's subjects."""

    def __init__(
        self,
        js: JetStreamContext,
        resources: Iterable[str],
        *,
        namespace: str = "",
        stream: str = OBJECTS_STREAM,
        keep_managed_fields: Iterable[str] = (),
        project: Mapping[str, Callable[[Obj], Obj]] | None = None,
        pack: bool = False,
        indexed_labels: Iterable[str] | None = None,
    ) -> None:
        self.resources = tuple(str(r) for r in resources)
        self._indexed = None if indexed_labels is None else frozenset(indexed_labels)
        """Label keys the label index holds (None: every key). A selector naming none of them is
        answered from the namespace's objects, filtered: the same answer, for less memory."""
        self._namespace = namespace
        self._keep_managed_fields = frozenset(str(r) for r in keep_managed_fields)
        self._project = {str(r): fn for r, fn in (project or {}).items()}
        self._packer = PackedStore(self._indexed) if pack else None
        self._objects: dict[ObjKey, Obj | Packed] = {}
        self._by_namespace: dict[tuple[str, str], set[str]] = defaultdict(set)
        self._by_owner: dict[str, set[ObjKey]] = defaultdict(set)
        self._by_label: dict[tuple[str, str, str, str], str | set[str]] = {}
        """(resource, namespace, label, value) → names: one name as itself, not as a set (most label
        values name one object: its uid, its name, its revision; a set costs 216 bytes)."""
        self._counts: dict[str, int] = defaultdict(int)
        self._changed = asyncio.Event()
        self._callbacks: list[ChangeCallback] = []
        self._follower = StreamFollower(
            js, stream, {r: self.filter_subject(r) for r in self.resources}, self._handle, name="object-view"
        )

    # ------------------------------------------------------------------ reads

    @property
    def synced(self) -> bool:
        return self._follower.synced

    async def wait_synced(self) -> None:
        await self._follower.wait_synced()

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        key = (str(resource), namespace, name)
        stored = self._objects.get(key)
        return None if stored is None else self._read(key, stored)

    def stamp(self, resource: str, namespace: str, name: str) -> tuple[str, str] | None:
        """The object's uid and resourceVersion, without decoding a packed object (what a writer's
        barrier compares, re-checked on every change while it waits); None when it is not held."""
        stored = self._objects.get((str(resource), namespace, name))
        if stored is None:
            return None
        if isinstance(stored, Packed):
            return stored.uid, stored.version
        meta = stored.get("metadata") or {}
        return str(meta.get("uid") or ""), str(meta.get("resourceVersion") or "")

    def list(
        self, resource: str, namespace: str, selector: Mapping[str, str] | None = None
    ) -> builtins.list[Obj]:
        resource = str(resource)
        indexed = [(k, v) for k, v in (selector or {}).items() if self._is_indexed(k)]
        if indexed:
            index = self._by_label
            candidates = [_names(index.get((resource, namespace, k, v))) for k, v in indexed]
            names = min(candidates, key=len)
        else:
            names = self._by_namespace.get((resource, namespace), set())
        keys = ((resource, namespace, name) for name in sorted(names))
        held = (self._read(k, self._objects[k]) for k in keys if _selected(self._objects[k], dict(indexed)))
        # a packed record holds the indexed labels only: the others are matched on the object read
        return [obj for obj in held if matches(obj, selector)]

    def all(self, resource: str) -> builtins.list[Obj]:
        """Every object of ``resource`` in the view, in (namespace, name) order."""
        resource = str(resource)
        return [self._read(k, self._objects[k]) for k in sorted(k for k in self._objects if k[0] == resource)]

    def keys(self, resource: str) -> builtins.list[tuple[str, str]]:
        """The (namespace, name) of every object of ``resource`` held, nothing decoded (a resync)."""
        resource = str(resource)
        held = self._by_namespace.items()
        return [(ns, name) for (r, ns), names in held if r == resource for name in sorted(names)]

    def owned(self, uid: str, resource: str | None = None) -> builtins.list[Obj]:
        """Objects that list ``uid`` among their ownerReferences (of one resource, or all)."""
        keys = sorted(self._by_owner.get(uid, set()))
        return [self._read(k, self._objects[k]) for k in keys if resource is None or k[0] == str(resource)]

    def __len__(self) -> int:
        return len(self._objects)

    def seen(self, resource: str) -> int:
        """The stream sequence of the last message of ``resource`` applied to the view."""
        return self._follower.seen(str(resource))

    async def wait_for(self, resource: str, sequence: int, limit: float | None = 5.0) -> bool:
        """Wait until the view applied ``resource``'s message ``sequence`` (or a later one).

        The read-your-trigger barrier: a durable consumer delivers message *S*; the reconcile it
        causes must read a view that already contains *S*. False after ``limit`` seconds (the reconcile
        then reads what the view has, and :meth:`when_holds` has it acted on again once it is there).
        """
        return await self._follower.wait_for(str(resource), sequence, limit)

    def when_holds(self, resource: str, sequence: int, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the view applied ``resource``'s message ``sequence`` (or a later
        one): what a reader that stopped waiting (:meth:`wait_for` said False) and acted on an older
        view does again then (:meth:`StreamFollower.when_holds`)."""
        self._follower.when_holds(str(resource), sequence, callback)

    async def wait_until(self, condition: Callable[[], bool], limit: float = 5.0) -> bool:
        """Wait until ``condition()`` holds, re-checked after every change; False after ``limit`` s.

        How a writer waits for its own writes to reach the view before it reads again (the
        *expectations* of Kubernetes' ReplicaSet controller).
        """
        deadline = asyncio.get_running_loop().time() + limit
        while not condition():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=remaining)
            except TimeoutError:
                return condition()
        return True

    def on_change(self, callback: ChangeCallback) -> None:
        self._callbacks.append(callback)

    # ------------------------------------------------------------------ feeding

    def apply(self, event: ObjectEvent, headers: Mapping[str, str] | None = None) -> bool:
        """Apply one change (also how tests feed a view without a bus); True when the object kept is
        the same as before but for its resourceVersion. ``headers``: the bus message's, for the
        change callbacks."""
        # one string object per resource and namespace, not one per object kept (keys, indexes)
        resource, namespace, name = sys.intern(event.resource), sys.intern(event.namespace), event.name
        key = (resource, namespace, name)
        old = self._objects.pop(key, None)
        if old is not None:
            for uid in _owners(old):
                self._by_owner[uid].discard(key)
                if not self._by_owner[uid]:
                    del self._by_owner[uid]
            self._by_namespace[(resource, namespace)].discard(name)
            for label, value in _labels(old):
                if self._is_indexed(label):
                    _discard(self._by_label, (resource, namespace, label, str(value)), name)
        if not event.deleted:
            obj = event.object
            meta = obj.get("metadata")
            if (
                isinstance(meta, dict)
                and "managedFields" in meta
                and resource not in self._keep_managed_fields
            ):
                obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
            if (projection := self._project.get(resource)) is not None:
                obj = projection(obj)
            stored = obj if self._packer is None else self._packer.pack(resource, obj)
            self._objects[key] = stored
            self._by_namespace[(resource, namespace)].add(name)
            for uid in _owners(stored):
                self._by_owner[uid].add(key)
            for label, value in _labels(stored):
                if self._is_indexed(label):
                    _add(self._by_label, (resource, namespace, label, str(value)), name)
        same = old is not None and not event.deleted and _same(old, self._objects[key])
        VIEW_EVENTS.labels(event.resource, event.type).inc()
        if old is None and not event.deleted:
            self._counts[event.resource] += 1
        elif old is not None and event.deleted:
            self._counts[event.resource] -= 1
        VIEW_OBJECTS.labels(event.resource).set(self._counts[event.resource])
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        if self._callbacks:
            change = Change(event, same, headers)
            for callback in self._callbacks:
                try:
                    callback(change)
                except Exception:
                    log.exception("view change callback failed for %s", event.subject)
        return same

    async def start(self) -> None:
        """Subscribe (retrying until the stream exists) without blocking the caller."""
        await self._follower.start()

    async def stop(self) -> None:
        await self._follower.stop()

    def _is_indexed(self, label: str) -> bool:
        return self._indexed is None or label in self._indexed

    def _read(self, key: ObjKey, stored: Obj | Packed) -> Obj:
        if isinstance(stored, Packed):
            assert self._packer is not None
            return self._packer.unpack(key[0], stored)
        return stored

    def filter_subject(self, resource: str) -> str:
        if self._namespace:
            return f"{OBJECTS_PREFIX}.{resource}.{encode_token(self._namespace)}.*"
        return object_filter(resource)

    def _handle(self, resource: str, msg: Msg) -> None:
        try:
            event = ObjectEvent.from_json(msg.data)
        except ValidationError as exc:
            VIEW_BAD_EVENTS.labels(resource).inc()
            log.error("view: undecodable %s event on %s: %s", resource, msg.subject, exc)
        else:
            self.apply(event, msg.headers)  # what changed is told to the change callbacks (Change.same)
