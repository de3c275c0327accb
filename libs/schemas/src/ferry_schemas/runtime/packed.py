"""Objects kept as compressed JSON: what lets a view hold thousands of boosters' children.

A view that keeps every object as parsed JSON costs about 90 KB of Python objects per booster (a
ModelServing's pod template, its ControllerRevision, the pod, the PodGroup, the Service...): 180 MB at
2000 boosters. Kept as deflated JSON against a *preset dictionary* (the first object of the same
resource, serialized: zlib's ``zdict``), an object costs a few hundred bytes, since objects of one
kind repeat one structure and differ in names, uids and a few values.

What a reader gets is exactly what was stored (decoded again on each read, the last few reads kept
decoded): drift detection still compares the whole stored object. The fields the view indexes and
the writers' barriers read (uid, resourceVersion, labels, owner uids) stay decoded in the record.
"""

from __future__ import annotations

import sys
import zlib
from collections import OrderedDict
from typing import Any

import orjson

Obj = dict[str, Any]

LEVEL = 6
DICTIONARY_LIMIT = 32 * 1024
"""zlib uses at most the last 32 KiB of a preset dictionary."""
DECODED_KEPT = 64
"""Objects kept decoded (a reconcile reads its owner's few objects several times in a row)."""


class Packed:
    """One stored object: what the view indexes, decoded, and the rest deflated."""

    __slots__ = ("blob", "labels", "owners", "uid", "version")

    def __init__(
        self, blob: bytes, version: str, uid: str, labels: tuple[str, ...], owners: tuple[str, ...]
    ) -> None:
        self.blob = blob
        self.version = version
        """``metadata.resourceVersion`` (left out of ``blob``, so equal blobs mean an unchanged object)."""
        self.uid = uid
        self.labels = labels
        """Label keys and values, flat: (key, value, key, value, ...); only the keys the store keeps."""
        self.owners = owners
        """The uids ``metadata.ownerReferences`` name."""

    def label_pairs(self) -> list[tuple[str, str]]:
        return list(zip(self.labels[::2], self.labels[1::2], strict=True))


def _text(value: Any) -> str:
    return sys.intern(str(value))


class PackedStore:
    """Packs and unpacks the objects of one view (one preset dictionary per resource)."""

    def __init__(self, labels_kept: frozenset[str] | None = None) -> None:
        self._labels_kept = labels_kept
        """The label keys a record keeps decoded (None: every key): the view's indexed ones."""
        self._dictionaries: dict[str, bytes] = {}
        self._decoded: OrderedDict[int, tuple[Packed, Obj]] = OrderedDict()

    def pack(self, resource: str, obj: Obj) -> Packed:
        meta = obj.get("metadata") or {}
        version = str(meta.get("resourceVersion") or "")
        body = orjson.dumps(  # a ModelServing ~100 µs with json.dumps, a few with orjson
            {**obj, "metadata": {k: v for k, v in meta.items() if k != "resourceVersion"}},
            option=orjson.OPT_NON_STR_KEYS,
        )
        dictionary = self._dictionaries.setdefault(resource, body[-DICTIONARY_LIMIT:])
        deflate = zlib.compressobj(LEVEL, zdict=dictionary)
        kept = self._labels_kept
        labels = tuple(
            _text(part)
            for pair in (meta.get("labels") or {}).items()
            if kept is None or pair[0] in kept
            for part in pair
        )
        owners = tuple(_text(ref.get("uid")) for ref in meta.get("ownerReferences") or ())
        packed = Packed(
            deflate.compress(body) + deflate.flush(), version, str(meta.get("uid") or ""), labels, owners
        )
        self._remember(packed, obj)
        return packed

    def unpack(self, resource: str, packed: Packed) -> Obj:
        found = self._decoded.get(id(packed))
        if found is not None and found[0] is packed:
            self._decoded.move_to_end(id(packed))
            return found[1]
        inflate = zlib.decompressobj(zdict=self._dictionaries[resource])
        obj: Obj = orjson.loads(inflate.decompress(packed.blob) + inflate.flush())
        if packed.version:
            obj.setdefault("metadata", {})["resourceVersion"] = packed.version
        self._remember(packed, obj)
        return obj

    def _remember(self, packed: Packed, obj: Obj) -> None:
        self._decoded[id(packed)] = (packed, obj)
        self._decoded.move_to_end(id(packed))
        while len(self._decoded) > DECODED_KEPT:
            self._decoded.popitem(last=False)
