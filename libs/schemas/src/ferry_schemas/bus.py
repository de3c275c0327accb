"""The bus contract: stream names, subjects, message ids and envelopes.

Every service talks to every other one only through the types and helpers here (design §2).
Subjects are ``ferry.<kind>.<resource>.<namespace>.<name>``; Kubernetes names may contain ``.``,
which NATS uses as the token separator, so names are encoded with :func:`encode_token`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# --------------------------------------------------------------------------- streams and buckets

OBJECTS_STREAM = "FERRY_OBJECTS"
"""Whole objects as the API server has them, last message per subject (a snapshot of the world)."""
DESIRED_STREAM = "FERRY_DESIRED"
"""The converter's complete desired set per owner, last message per subject."""
RESULTS_STREAM = "FERRY_RESULTS"
"""The applier's outcome per owner, last message per subject."""
DEAD_LETTER_STREAM = "FERRY_DEAD_LETTERS"
"""Messages that failed ``max_deliver`` times, kept for inspection (never dropped silently)."""

OBJECTS_PREFIX = "ferry.obj"
DESIRED_PREFIX = "ferry.desired"
RESULTS_PREFIX = "ferry.applied"
DEAD_LETTER_PREFIX = "ferry.dlq"
KV_STREAM = "FERRY_KV"
"""KV-cache block events of every engine pod (``ferry_schemas.kv``), kept for ``KV_MAX_AGE_SECONDS``."""
KV_PREFIX = "ferry.kv"
KV_SNAPSHOT_SECONDS = 30.0
KV_MAX_AGE_SECONDS = 3 * KV_SNAPSHOT_SECONDS
"""Long enough that the stream always holds each live pod's latest snapshot."""
LOAD_STREAM = "FERRY_LOAD"
"""Each engine's load as its runtime sidecar reads it (``ferry_schemas.load``): the last message per
pod, in memory, dropped after ``LOAD_MAX_AGE_SECONDS`` (a pod whose sidecar stopped ages out)."""
LOAD_PREFIX = "ferry.load"
LOAD_HEARTBEAT_SECONDS = 5.0
"""A sidecar publishes on every change of the load it reads and at least this often."""
LOAD_STALE_SECONDS = 3 * LOAD_HEARTBEAT_SECONDS
"""Consumers treat load older than this as unknown (three heartbeats missed)."""
LOAD_MAX_AGE_SECONDS = 4 * LOAD_STALE_SECONDS

APPLIED_GENERATIONS_BUCKET = "ferry_applied_generations"
"""KV: ``<resource>.<ns>.<name>`` → the last owner generation the applier applied (generation guard)."""
RATE_LIMIT_BUCKET = "ferry_rate_limits"
"""KV: token buckets shared by router replicas for global rate limits."""

GATEWAY_LISTENERS_BUCKET = "ferry_gateway_listeners"
"""KV: ``<router replica>`` → :class:`ListenerReport`, renewed every few seconds, expiring after
:data:`LISTENER_REPORT_TTL`: what the data plane really serves (Gateway ``Programmed``)."""
LISTENER_REPORT_TTL = 15.0

DUPLICATE_WINDOW_SECONDS = 120.0
DEAD_LETTER_MAX_AGE_SECONDS = 14 * 24 * 3600.0
"""Dead letters are kept two weeks (time to look at them and redrive), then dropped oldest first..."""
DEAD_LETTER_MAX_BYTES = 1024**3
"""...or when the stream passes 1 GiB, so a poison flood cannot fill the JetStream store."""
MSG_ID_HEADER = "Nats-Msg-Id"


class Resource(StrEnum):
    """Plural resource names as they appear on subjects (and in the Kubernetes API paths)."""

    MODEL_BOOSTERS = "modelboosters"
    MODEL_SERVINGS = "modelservings"
    MODEL_SERVERS = "modelservers"
    MODEL_ROUTES = "modelroutes"
    EXTERNAL_MODEL_PROVIDERS = "externalmodelproviders"
    AUTOSCALING_POLICIES = "autoscalingpolicies"
    AUTOSCALING_POLICY_BINDINGS = "autoscalingpolicybindings"
    POD_GROUPS = "podgroups"
    PODS = "pods"
    SERVICES = "services"
    LEADER_WORKER_SETS = "leaderworkersets"
    """``leaderworkerset.x-k8s.io/v1``: served as ModelServings when the API server has the kind."""
    CONTROLLER_REVISIONS = "controllerrevisions"
    CREDENTIALS = "secrets"
    """Only Secrets labelled as ExternalModelProvider credentials, slimmed to their data (no annotations)."""
    # Gateway API and Gateway API Inference Extension (published only in gateway mode)
    GATEWAY_CLASSES = "gatewayclasses"
    GATEWAYS = "gateways"
    HTTP_ROUTES = "httproutes"
    REFERENCE_GRANTS = "referencegrants"
    INFERENCE_POOLS = "inferencepools"


class StreamSpec(BaseModel):
    """How a stream is declared. Only the watcher declares streams (one owner, design rule 3)."""

    name: str
    subjects: list[str]
    max_msgs_per_subject: int
    duplicate_window: float = DUPLICATE_WINDOW_SECONDS
    max_age: float | None = None  # seconds a message is kept (None: until replaced per subject)
    max_bytes: int | None = None  # the stream's size limit (None: unlimited); oldest dropped first
    memory: bool = False  # kept in memory only (what a restart of NATS may lose without harm)


STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec(name=OBJECTS_STREAM, subjects=[f"{OBJECTS_PREFIX}.>"], max_msgs_per_subject=1),
    StreamSpec(name=DESIRED_STREAM, subjects=[f"{DESIRED_PREFIX}.>"], max_msgs_per_subject=1),
    StreamSpec(name=RESULTS_STREAM, subjects=[f"{RESULTS_PREFIX}.>"], max_msgs_per_subject=1),
    StreamSpec(
        name=DEAD_LETTER_STREAM,
        subjects=[f"{DEAD_LETTER_PREFIX}.>"],
        max_msgs_per_subject=-1,
        max_age=DEAD_LETTER_MAX_AGE_SECONDS,
        max_bytes=DEAD_LETTER_MAX_BYTES,
    ),
    StreamSpec(
        name=KV_STREAM,
        subjects=[f"{KV_PREFIX}.>"],
        max_msgs_per_subject=-1,
        max_age=KV_MAX_AGE_SECONDS,
        duplicate_window=KV_SNAPSHOT_SECONDS,  # must not exceed max_age
    ),
    StreamSpec(
        name=LOAD_STREAM,
        subjects=[f"{LOAD_PREFIX}.>"],
        max_msgs_per_subject=1,
        max_age=LOAD_MAX_AGE_SECONDS,
        duplicate_window=LOAD_HEARTBEAT_SECONDS,  # no message ids: nothing to deduplicate
        memory=True,
    ),
)

# --------------------------------------------------------------------------- subjects

_TOKEN_ESCAPES = {".": "_"}
CLUSTER_SCOPE_TOKEN = "-"
"""The namespace token of a cluster-scoped object (GatewayClass): no namespace is named ``-``."""


def encode_token(value: str) -> str:
    """Encode a Kubernetes name or namespace as one NATS subject token.

    Kubernetes names are DNS subdomains (``[a-z0-9.-]``) and never contain ``_``, so mapping
    ``.`` → ``_`` is reversible and keeps subjects readable.
    """
    if not value:
        raise ValueError("a subject token cannot be empty")
    for bad in (" ", "*", ">", "\t", "\n"):
        if bad in value:
            raise ValueError(f"{value!r} cannot be used in a subject token")
    return value.replace(".", "_")


def decode_token(token: str) -> str:
    """Inverse of :func:`encode_token`."""
    return token.replace("_", ".")


def namespace_token(namespace: str) -> str:
    """The subject token of a namespace; cluster-scoped objects (namespace ``""``) use ``-``."""
    return encode_token(namespace) if namespace else CLUSTER_SCOPE_TOKEN


def _subject(prefix: str, resource: str, namespace: str, name: str) -> str:
    return f"{prefix}.{resource}.{namespace_token(namespace)}.{encode_token(name)}"


def object_subject(resource: str, namespace: str, name: str) -> str:
    """``ferry.obj.<resource>.<ns>.<name>``."""
    return _subject(OBJECTS_PREFIX, resource, namespace, name)


def desired_subject(resource: str, namespace: str, name: str) -> str:
    """``ferry.desired.<resource>.<ns>.<name>`` (resource is the owner's)."""
    return _subject(DESIRED_PREFIX, resource, namespace, name)


def result_subject(resource: str, namespace: str, name: str) -> str:
    """``ferry.applied.<resource>.<ns>.<name>`` (resource is the owner's)."""
    return _subject(RESULTS_PREFIX, resource, namespace, name)


def dead_letter_subject(service: str, stream: str, consumer: str) -> str:
    """``ferry.dlq.<service>.<stream>.<consumer>``."""
    return f"{DEAD_LETTER_PREFIX}.{service}.{stream}.{consumer}"


def object_filter(resource: str) -> str:
    """Subject filter for every object of one resource: ``ferry.obj.<resource>.>``."""
    return f"{OBJECTS_PREFIX}.{resource}.>"


class SubjectKey(BaseModel):
    """The parts of a ``ferry.<kind>.<resource>.<ns>.<name>`` subject."""

    prefix: str
    resource: str
    namespace: str
    name: str


def parse_subject(subject: str) -> SubjectKey:
    """Split a Ferry subject back into its parts (names decoded)."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "ferry":
        raise ValueError(f"not a Ferry object subject: {subject!r}")
    return SubjectKey(
        prefix=f"{parts[0]}.{parts[1]}",
        resource=parts[2],
        namespace="" if parts[3] == CLUSTER_SCOPE_TOKEN else decode_token(parts[3]),
        name=decode_token(parts[4]),
    )


def kv_key(resource: str, namespace: str, name: str) -> str:
    """A KV key for one object (KV keys allow ``[-/_=.a-zA-Z0-9]``)."""
    return f"{resource}.{encode_token(namespace)}.{encode_token(name)}"


# --------------------------------------------------------------------------- envelopes


class Envelope(BaseModel):
    """Base for every bus message: camelCase JSON on the wire, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    def to_bytes(self) -> bytes:
        """Deterministic JSON (sorted keys) so identical content gives identical bytes."""
        return WIRE_JSON.encode(self.model_dump(mode="json", exclude_none=True))


WIRE_JSON = msgspec.json.Encoder(order="sorted")
"""The wire form of bus messages: :func:`canonical_json`'s bytes (sorted keys, no spaces, UTF-8
unescaped), except that a float with an exponent is written ``1e16``, not ``1e+16``. A seventh of
the cost of ``json.dumps(sort_keys=True)`` (its C encoder still sorts each dict in Python): 245 µs
for a 4 KB pod, most of the watcher's CPU per event. Hashes keep :func:`canonical_json`'s bytes,
which name revisions stored in the cluster (made by this encoder where the bytes are the same)."""


_MARKS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x2E if b in b".eE" else 0x20 for b in range(256))
"""Digits → ``0``, ``.``/``e``/``E`` → ``.``, the rest → a space: ``0.`` then marks where a digit is
followed by a fraction or an exponent (found at C speed: a regex scan cost as much as json.dumps)."""
_NUMBER_BODY = frozenset(b"-0123456789")
_NUMBER_AFTER = frozenset(b":,[")


def _has_fraction(wire: bytes) -> bool:
    """Whether :data:`WIRE_JSON`'s ``wire`` may hold a number with a fraction or an exponent: the only
    place its bytes can differ from ``json.dumps``'s (``1e16``; ``0.00003`` for ``3e-05``). A digit
    followed by ``.``/``e``/``E`` counts when the digits before it follow ``:``, ``,`` or ``[`` (or
    start the bytes), as a number's do; the same text inside a string counts too (it only costs a
    ``json.dumps``)."""
    marks = wire.translate(_MARKS)
    at = marks.find(b"0.")
    while at >= 0:
        i = at
        while i > 0 and wire[i - 1] in _NUMBER_BODY:
            i -= 1
        if i == 0 or wire[i - 1] in _NUMBER_AFTER:
            return True
        at = marks.find(b"0.", at + 2)
    return False


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no spaces: the byte form hashed for ids and revisions.

    ``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``'s bytes, always:
    they name revisions stored in the cluster. Made by :data:`WIRE_JSON` and checked (17 against 66 µs
    a booster's desired set: the hashes of every desired set, revision and status) unless it holds a
    number with a fraction or an exponent (:func:`_has_fraction`) or something msgspec does not
    encode the same way (a dict key that is not a string), which ``json.dumps`` writes then.
    """
    try:
        wire = WIRE_JSON.encode(value)
    except (TypeError, msgspec.EncodeError):
        wire = None
    if wire is not None and not _has_fraction(wire):
        return wire
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_hash(value: Any, length: int = 16) -> str:
    """A short stable sha256 of a JSON-able value."""
    return hashlib.sha256(canonical_json(value)).hexdigest()[:length]


def utcnow() -> datetime:
    return datetime.now(UTC)


EventType = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]


class ObjectEvent(Envelope):
    """One change of one Kubernetes object, with the whole object (design rule 1).

    ``type == "DELETED"`` is a tombstone: ``object`` is the last state the watcher saw.
    ``SYNC`` is an object seen in a (re)list.
    """

    type: EventType
    resource: str
    namespace: str
    name: str
    uid: str
    resource_version: str
    generation: int | None = None
    object: dict[str, Any]
    observed_at: datetime = Field(default_factory=utcnow)

    @property
    def deleted(self) -> bool:
        return self.type == "DELETED"

    @property
    def subject(self) -> str:
        return object_subject(self.resource, self.namespace, self.name)

    @property
    def msg_id(self) -> str:
        """``<uid>/<resourceVersion>/<type>``; a relist re-publishes as SYNC, deduplicated per rv."""
        kind = "DELETED" if self.deleted else "LIVE"
        return f"{self.uid}/{self.resource_version}/{kind}"

    def to_bytes(self) -> bytes:
        """:meth:`Envelope.to_bytes` without a model dump: the object is a parsed API answer (JSON
        already), so only the envelope's own fields are converted. The dump copied the whole object
        (115 µs of a 4 KB pod's 150 µs in the watcher)."""
        wire: dict[str, Any] = {
            "type": self.type,
            "resource": self.resource,
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "resourceVersion": self.resource_version,
            "object": self.object,
            "observedAt": self.observed_at,
        }
        if self.generation is not None:
            wire["generation"] = self.generation
        return WIRE_JSON.encode(wire)

    @classmethod
    def from_json(cls, data: bytes | str) -> ObjectEvent:
        """:meth:`model_validate_json` at a third of its cost (msgspec checks the wire form's types,
        the model is built without validating again: 13 against 25 µs a ModelServing message, in
        every view of every service). Anything msgspec refuses — a field named in snake case, a
        value pydantic would coerce, a bad message — goes through pydantic, so what is accepted and
        refused (``ValidationError``) is the model's."""
        try:
            wire = _OBJECT_EVENT_WIRE.decode(data)
        except msgspec.DecodeError:  # ValidationError subclasses it
            return cls.model_validate_json(data)
        fields = {
            name: value
            for name in wire.__struct_fields__
            if (value := getattr(wire, name)) is not msgspec.UNSET
        }
        return cls.model_construct(**fields)  # what is missing takes the model's default

    @classmethod
    def from_object(cls, event_type: EventType, resource: str, obj: dict[str, Any]) -> ObjectEvent:
        meta = obj.get("metadata") or {}
        return cls(
            type=event_type,
            resource=resource,
            namespace=meta.get("namespace") or "",
            name=meta["name"],
            uid=meta.get("uid") or "",
            resource_version=str(meta.get("resourceVersion") or ""),
            generation=meta.get("generation"),
            object=obj,
        )


def _wire_struct(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec Struct of ``model``'s wire form (camelCase names, its field types; a field with a
    default may be missing: ``msgspec.UNSET``), to decode strictly what the model would accept."""
    fields = [
        (name, field.annotation, msgspec.field(name=field.alias or name))
        if field.is_required()
        else (
            name,
            field.annotation | msgspec.UnsetType,
            msgspec.field(default=msgspec.UNSET, name=field.alias or name),
        )
        for name, field in model.model_fields.items()
    ]
    return msgspec.defstruct(f"{model.__name__}Wire", fields, kw_only=True)


_OBJECT_EVENT_WIRE = msgspec.json.Decoder(_wire_struct(ObjectEvent))


class OwnerKey(Envelope):
    """Identifies the owner object a desired set or apply result belongs to."""

    api_version: str
    kind: str
    resource: str
    namespace: str
    name: str
    uid: str
    generation: int = 0
    resource_version: str = ""

    def owner_reference(self) -> dict[str, Any]:
        """The ownerReference every child carries (controller, blockOwnerDeletion)."""
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


class ConversionError(Envelope):
    """A conversion failure as a value: where (a field path) and what to do about it."""

    field: str
    message: str
    reason: str = "ConversionFailed"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class ServingWorkload(Envelope):
    """What a ModelServing needs besides plain children: a blueprint per ServingGroup.

    Which group ordinals exist is the applier's decision (scale-down order, partitions), so the
    converter sends one blueprint and the replica count; ``ferry_schemas.workload`` renders the
    blueprint for one ordinal (pure function, shared by converter tests and the applier).
    """

    replicas: int
    revision: str
    blueprint: dict[str, Any]


class DesiredSet(Envelope):
    """The complete set of children one owner wants, at one owner generation.

    ``children`` are whole objects ready for server-side apply (apiVersion, kind, metadata with
    labels and ownerReferences, spec). A child of a kind listed in ``managed_kinds`` that carries
    the owner's labels but is not in ``children`` is pruned. ``deleted`` is the owner's tombstone.
    ``errors`` non-empty means nothing should change in the cluster and the owner is ``Failed``.
    """

    owner: OwnerKey
    deleted: bool = False
    children: list[dict[str, Any]] = Field(default_factory=list)
    managed_kinds: list[str] = Field(default_factory=list)
    owner_selector: dict[str, str] = Field(default_factory=dict)
    workload: ServingWorkload | None = None
    errors: list[ConversionError] = Field(default_factory=list)
    produced_at: datetime = Field(default_factory=utcnow)

    @property
    def subject(self) -> str:
        return desired_subject(self.owner.resource, self.owner.namespace, self.owner.name)

    @property
    def msg_id(self) -> str:
        """``<uid>/<generation>/<content hash>``: a redelivered or duplicated input publishes once."""
        return self.wire()[1]

    def wire(self) -> tuple[bytes, str]:
        """``(to_bytes(), msg_id)`` from one dump of the set (a publisher needs both; each alone
        dumps the whole set again)."""
        body = self.model_dump(mode="json", exclude_none=True)
        wire = WIRE_JSON.encode(body)
        body.pop("producedAt", None)
        return wire, f"{self.owner.uid}/{self.owner.generation}/{content_hash(body)}"


class ChildResult(Envelope):
    """The outcome for one child object."""

    api_version: str
    kind: str
    name: str
    action: Literal["applied", "unchanged", "pruned", "failed", "created", "deleted"]
    message: str = ""


class ApplyResult(Envelope):
    """What the applier did for one desired set."""

    owner: OwnerKey
    ok: bool
    reason: str = ""
    message: str = ""
    permanent: bool = False
    children: list[ChildResult] = Field(default_factory=list)
    finished_at: datetime = Field(default_factory=utcnow)

    @property
    def subject(self) -> str:
        return result_subject(self.owner.resource, self.owner.namespace, self.owner.name)

    @property
    def msg_id(self) -> str:
        body = self.model_dump(mode="json", exclude={"finished_at"}, exclude_none=True)
        return f"{self.owner.uid}/{self.owner.generation}/{content_hash(body)}"


class DeadLetter(Envelope):
    """A message that exhausted its deliveries, with where it came from and why it failed."""

    service: str
    stream: str
    consumer: str
    subject: str
    stream_sequence: int
    deliveries: int
    error: str = ""
    data: str = ""


class ListenerReport(Envelope):
    """One router replica's Gateway listeners: ``ports`` maps each port it should serve to ``""``
    when bound, else the reason it is not; ``address`` is where clients reach the replica."""

    replica: str
    address: str
    ports: dict[str, str] = Field(default_factory=dict)
    reported_at: datetime = Field(default_factory=utcnow)
