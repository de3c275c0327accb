"""Every Kthena label/annotation key and naming helper shared across services.

Keys are copied exactly from Kthena (``spec/booster.md`` §3.1, ``spec/serving.md`` §2.1-§2.2);
the watcher, converter, applier, status and router import them from here and nowhere else.
"""

from __future__ import annotations

import re
from typing import NamedTuple

# --------------------------------------------------------------------------- API groups

WORKLOAD_GROUP = "workload.serving.volcano.sh"
NETWORKING_GROUP = "networking.serving.volcano.sh"
WORKLOAD_API_VERSION = f"{WORKLOAD_GROUP}/v1alpha1"
NETWORKING_API_VERSION = f"{NETWORKING_GROUP}/v1alpha1"
PODGROUP_API_VERSION = "scheduling.volcano.sh/v1beta1"
LWS_GROUP = "leaderworkerset.x-k8s.io"
LWS_VERSION = "v1"
LWS_API_VERSION = f"{LWS_GROUP}/{LWS_VERSION}"
GATEWAY_GROUP = "gateway.networking.k8s.io"
"""Gateway API (Gateway, GatewayClass, HTTPRoute v1; ReferenceGrant v1beta1)."""
INFERENCE_GROUP = "inference.networking.k8s.io"
"""Gateway API Inference Extension (InferencePool v1)."""

# --------------------------------------------------------------------------- ModelBooster children

_BOOSTER_PREFIX = f"{WORKLOAD_GROUP}/"
BOOSTER_MODEL_NAME = f"{_BOOSTER_PREFIX}model-name"
"""``<booster name>`` on every booster child and ModelServing pod template."""
BOOSTER_BACKEND_NAME = f"{_BOOSTER_PREFIX}backend-name"
"""``<backend name>``; the empty string on the ModelRoute and on model-level autoscaling objects."""
BOOSTER_MANAGED_BY = f"{_BOOSTER_PREFIX}managed-by"
BOOSTER_MANAGED_BY_VALUE = WORKLOAD_GROUP
BOOSTER_REVISION = f"{_BOOSTER_PREFIX}revision"
BOOSTER_MODEL_UID = f"{_BOOSTER_PREFIX}model-uid"
"""``<booster uid>``: the owner selector the applier prunes booster children by."""

# --------------------------------------------------------------------------- ModelServing children

_SERVING_PREFIX = "modelserving.volcano.sh/"
MS_NAME = f"{_SERVING_PREFIX}name"
"""``<ModelServing name>`` on pods, headless services, PodGroups, ControllerRevisions."""
MS_GROUP_NAME = f"{_SERVING_PREFIX}group-name"
"""``<ms>-<group ordinal>`` on pods, services, PodGroups."""
MS_ROLE = f"{_SERVING_PREFIX}role"
MS_ROLE_ID = f"{_SERVING_PREFIX}role-id"
"""``<role>-<role ordinal>`` on pods and services."""
MS_ENTRY = f"{_SERVING_PREFIX}entry"
"""``"true"`` on entry pods only; workers do not carry the key."""
MS_REVISION = f"{_SERVING_PREFIX}revision"
MS_ROLE_TEMPLATE_HASH = f"{_SERVING_PREFIX}role-template-hash"
ENTRY_VALUE = "true"
MANAGED_POD_LABELS = frozenset(
    {MS_NAME, MS_GROUP_NAME, MS_ROLE, MS_ROLE_ID, MS_ENTRY, MS_REVISION, MS_ROLE_TEMPLATE_HASH}
)
"""The pod labels Ferry sets and reads back: a pod template cannot override them."""

# Annotations
VOLCANO_GROUP_NAME_ANNOTATION = "scheduling.k8s.io/group-name"
"""``<group name>`` on pods (volcano scheduler) and PodGroups."""
VOLCANO_TASK_SPEC_ANNOTATION = "volcano.sh/task-spec"
"""``<role>-<role ordinal>`` on pods (volcano scheduler)."""
VOLCANO_QUEUE_ANNOTATION = "scheduling.volcano.sh/queue-name"
"""Read from the ModelServing, copied to ``PodGroup.spec.queue``."""
POD_DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"

VOLCANO_SCHEDULER = "volcano"

# Env vars injected into every container of a ServingGroup pod
ENV_GROUP_SIZE = "GROUP_SIZE"
ENV_ENTRY_ADDRESS = "ENTRY_ADDRESS"
ENV_WORKER_INDEX = "WORKER_INDEX"
INJECTED_ENV = (ENV_GROUP_SIZE, ENV_ENTRY_ADDRESS, ENV_WORKER_INDEX)

# --------------------------------------------------------------------------- naming helpers

DNS1123_LABEL_MAX = 63
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_ORDINAL_SUFFIX = re.compile(r"^(.*)-([0-9]+)$")


def is_dns1123_label(value: str) -> bool:
    """Lower-case alphanumerics and ``-``, alphanumeric at both ends, at most 63 characters."""
    return len(value) <= DNS1123_LABEL_MAX and bool(_DNS1123_LABEL.match(value))


def is_dns1035_label(value: str) -> bool:
    """Like a DNS-1123 label but starting with a letter (Service names, role names)."""
    return len(value) <= DNS1123_LABEL_MAX and bool(_DNS1035_LABEL.match(value))


def booster_child_name(booster: str, backend: str) -> str:
    """``<booster>-<backend>`` (just ``<booster>`` when the backend name is empty)."""
    return f"{booster}-{backend}" if backend else booster


def group_name(serving: str, ordinal: int) -> str:
    """ServingGroup / PodGroup name: ``<ms>-<g>``."""
    return f"{serving}-{ordinal}"


def role_id(role: str, ordinal: int) -> str:
    """Role instance id (and Volcano task name): ``<role>-<r>``."""
    return f"{role}-{ordinal}"


def pod_name(group: str, role_instance: str, index: int) -> str:
    """``<ms>-<g>-<role>-<r>-<p>``; ``p = 0`` is the entry pod, workers are ``1..workerReplicas``."""
    return f"{group}-{role_instance}-{index}"


def entry_pod_name(group: str, role_instance: str) -> str:
    """The entry pod's name, which is also the headless Service's name."""
    return pod_name(group, role_instance, 0)


class PodSlot(NamedTuple):
    """Where a pod sits in its ModelServing, read from its name ``<ms>-<g>-<role>-<r>-<p>``."""

    group: int
    role: str
    role_ordinal: int
    pod_index: int

    @property
    def role_id(self) -> str:
        return role_id(self.role, self.role_ordinal)


def pod_slot(serving: str, pod: str) -> PodSlot | None:
    """The slot in a pod name Ferry gave it; None when the name has no such shape.

    Read from the name, which nobody can change after creation, rather than from labels.
    """
    prefix = f"{serving}-"
    if not pod.startswith(prefix):
        return None
    digits, _, rest = pod[len(prefix) :].partition("-")
    if not digits.isdigit() or (len(digits) > 1 and digits[0] == "0"):
        return None
    instance, index = parse_ordinal(rest)
    role, role_ordinal = parse_ordinal(instance)
    if index < 0 or role_ordinal < 0 or not is_dns1035_label(role):
        return None
    return PodSlot(int(digits), role, role_ordinal, index)


def parse_ordinal(name: str) -> tuple[str, int]:
    """Split ``<parent>-<n>`` into (parent, n); ordinal ``-1`` when there is none (Kthena's rule)."""
    match = _ORDINAL_SUFFIX.match(name)
    if match is None:
        return name, -1
    number = int(match.group(2))
    if number > 2**31 - 1:
        return name, -1
    return match.group(1), number
