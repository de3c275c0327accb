"""Render one ServingGroup of a ModelServing: PodGroup, entry/worker Pods, headless Services.

Pure functions shared by the converter (which builds the blueprint) and the applier (which
decides which group ordinals exist and renders each). Behaviour follows ``spec/serving.md``
§2-§3 (names, labels, annotations, injected env, PodGroup content).

Public API::

    blueprint(serving: dict) -> dict                 # ModelServing (wire form) -> blueprint
    serving_revision(roles) / role_template_hash(role) # revision hashes (replicas/rolling excluded)
    render_group(workload: ServingWorkload, ordinal: int) -> list[dict]
    group_pod_names(workload, ordinal) -> list[str]    # names render_group would produce

``render_group`` returns whole objects ready for server-side apply, in creation order:
the PodGroup (only when the ModelServing's ``schedulerName`` is ``volcano``), then per role and
role replica the headless Service (when the role has a ``workerTemplate``), the entry Pod and
the worker Pods.
"""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal
from typing import Any

from ferry_schemas import labels as L
from ferry_schemas.bus import ServingWorkload, content_hash
from ferry_schemas.quantity import format_quantity, parse_quantity_with_unit

BLUEPRINT_VERSION = 1
_ROLLING_FIELDS = ("replicas", "maxUnavailable", "partition")


# --------------------------------------------------------------------------- revisions


def _hashable_role(role: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in role.items() if key not in _ROLLING_FIELDS}


def serving_revision(roles: list[dict[str, Any]]) -> str:
    """Hash of ``spec.template.roles`` without ``replicas``/``maxUnavailable``/``partition``.

    Nothing else in the spec contributes (schedulerName, gangPolicy, networkTopology, …), so a
    scale change never starts a rollout. The input is not mutated.
    """
    return content_hash([_hashable_role(role) for role in roles], length=10)


def role_template_hash(role: dict[str, Any]) -> str:
    """The same hash over a single role."""
    return content_hash(_hashable_role(role), length=10)


# --------------------------------------------------------------------------- blueprint


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def blueprint(serving: dict[str, Any]) -> dict[str, Any]:
    """What :func:`render_group` needs from a ModelServing, in one JSON-able dict."""
    meta = serving.get("metadata") or {}
    spec = serving.get("spec") or {}
    template = _json_copy(spec.get("template") or {})
    roles = template.get("roles") or []
    annotations = meta.get("annotations") or {}
    scheduler = spec.get("schedulerName")
    return {
        "version": BLUEPRINT_VERSION,
        "owner": {
            "apiVersion": serving.get("apiVersion", L.WORKLOAD_API_VERSION),
            "kind": serving.get("kind", "ModelServing"),
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
        },
        "schedulerName": scheduler if isinstance(scheduler, str) else "",
        "queue": annotations.get(L.VOLCANO_QUEUE_ANNOTATION),
        "plugins": _json_copy(spec.get("plugins")),
        "lwsOwner": next(
            (ref.get("name") for ref in meta.get("ownerReferences") or [] if ref.get("kind") == LWS_KIND),
            None,
        ),
        "template": template,
        "roleTemplateHashes": {role.get("name", ""): role_template_hash(role) for role in roles},
        # read by the applier's rollout and recovery decisions (spec/serving.md §6.4, §6.6)
        "rolloutStrategy": _json_copy(spec.get("rolloutStrategy")),
        "recoveryPolicy": spec.get("recoveryPolicy"),
    }


def _lws_owner(meta: dict[str, Any]) -> str | None:
    """The LeaderWorkerSet owning the ModelServing, if any (read by ``lws-standard-labels``)."""
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") == LWS_KIND:
            return str(ref.get("name") or "")
    return None


def uses_pod_groups(bp: dict[str, Any]) -> bool:
    """PodGroups (and the Volcano pod annotations) exist only for ``schedulerName: volcano``."""
    return bool(bp.get("schedulerName") == L.VOLCANO_SCHEDULER)


# --------------------------------------------------------------------------- quantities


def _add_requests(total: dict[str, tuple[Decimal, bool]], spec: dict[str, Any] | None, times: int) -> None:
    if not spec or times <= 0:
        return
    for container in spec.get("containers") or []:
        requests = ((container or {}).get("resources") or {}).get("requests") or {}
        for name, value in requests.items():
            parsed = parse_quantity_with_unit(value)
            if parsed is None:
                continue
            amount, binary = parsed
            before, was_binary = total.get(name, (Decimal(0), binary))
            total[name] = (before + amount * times, was_binary and binary)


# --------------------------------------------------------------------------- PodGroup


def _min_role_replicas(template: dict[str, Any], role: dict[str, Any]) -> int:
    replicas = _int(role.get("replicas"), 1)
    gang = (template.get("gangPolicy") or {}).get("minRoleReplicas") or {}
    name = role.get("name", "")
    if name in gang:
        return min(_int(gang[name], replicas), replicas)
    return replicas


def render_pod_group(bp: dict[str, Any], ordinal: int) -> dict[str, Any]:
    """The Volcano PodGroup of one ServingGroup (``spec/serving.md`` §3.3)."""
    owner = bp["owner"]
    template = bp["template"]
    group = L.group_name(owner["name"], ordinal)
    min_member = 0
    min_task_member: dict[str, int] = {}
    resources: dict[str, tuple[Decimal, bool]] = {}
    sub_groups: list[dict[str, Any]] = []
    topology = template.get("networkTopology") or {}
    for role in template.get("roles") or []:
        name = role.get("name", "")
        workers = _int(role.get("workerReplicas"), 0)
        minimum = _min_role_replicas(template, role)
        size = 1 + workers
        min_member += size * minimum
        for index in range(minimum):
            min_task_member[L.role_id(name, index)] = size
        _add_requests(resources, (role.get("entryTemplate") or {}).get("spec"), minimum)
        if role.get("workerTemplate") is not None:
            _add_requests(resources, (role.get("workerTemplate") or {}).get("spec"), workers * minimum)
        sub_group: dict[str, Any] = {
            "name": name,
            "labelSelector": {"matchLabels": {L.MS_NAME: owner["name"], L.MS_ROLE: name}},
            "matchLabelKeys": [L.MS_ROLE_ID],
            "subGroupSize": size,
            "minSubGroups": minimum,
        }
        if topology.get("rolePolicy"):
            sub_group["networkTopology"] = copy.deepcopy(topology["rolePolicy"])
        sub_groups.append(sub_group)
    spec: dict[str, Any] = {
        "minMember": min_member,
        "minTaskMember": min_task_member,
        "subGroupPolicy": sub_groups,
    }
    if resources:
        spec["minResources"] = {name: format_quantity(*value) for name, value in sorted(resources.items())}
    if bp.get("queue"):
        spec["queue"] = bp["queue"]
    if topology.get("groupPolicy"):
        spec["networkTopology"] = copy.deepcopy(topology["groupPolicy"])
    return {
        "apiVersion": L.PODGROUP_API_VERSION,
        "kind": "PodGroup",
        "metadata": {
            "name": group,
            "namespace": owner["namespace"],
            "labels": {L.MS_NAME: owner["name"], L.MS_GROUP_NAME: group},
            "annotations": {L.VOLCANO_GROUP_NAME_ANNOTATION: group},
            "ownerReferences": [_owner_reference(owner, block=False)],
        },
        "spec": spec,
    }


# --------------------------------------------------------------------------- Pods and Services


def _owner_reference(owner: dict[str, Any], *, block: bool = True) -> dict[str, Any]:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["name"],
        "uid": owner["uid"],
        "controller": True,
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return ref


def _inject_env(containers: list[dict[str, Any]], values: dict[str, str]) -> None:
    for container in containers:
        env = [item for item in container.get("env") or [] if item.get("name") not in values]
        env += [{"name": name, "value": value} for name, value in values.items()]
        container["env"] = env


def _template_hash(bp: dict[str, Any], role: dict[str, Any]) -> str:
    """The role's template hash as the blueprint recorded it (computed only for a role it lacks)."""
    hashes = bp["roleTemplateHashes"]
    name = role.get("name", "")
    return str(hashes[name]) if name in hashes else role_template_hash(role)


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, scalars), as :func:`copy.deepcopy` makes it, without
    its memo bookkeeping (a pod template's copy was most of rendering a pod); other values are
    deep-copied."""
    if type(value) is dict:
        return {key: _json_copy(item) for key, item in value.items()}
    if type(value) is list:
        return [_json_copy(item) for item in value]
    if value is None or type(value) in (str, int, float, bool):
        return value
    return copy.deepcopy(value)


def render_pod(
    bp: dict[str, Any], revision: str, ordinal: int, role: dict[str, Any], role_ordinal: int, index: int
) -> dict[str, Any]:
    """Entry pod (``index == 0``) or worker pod ``index`` of one role replica (``spec/serving.md`` §2.3)."""
    owner = bp["owner"]
    role_name = role.get("name", "")
    group = L.group_name(owner["name"], ordinal)
    rid = L.role_id(role_name, role_ordinal)
    entry = index == 0
    template = (role.get("entryTemplate") if entry else role.get("workerTemplate")) or {}
    template_meta = template.get("metadata") or {}
    # the template's labels first: the keys Ferry manages always carry Ferry's values (Kthena lets
    # the template override them; Ferry reads them back, so they must be its own)
    template_labels = template_meta.get("labels") or {}
    labels = {key: value for key, value in template_labels.items() if key not in L.MANAGED_POD_LABELS}
    labels |= {
        L.MS_NAME: owner["name"],
        L.MS_GROUP_NAME: group,
        L.MS_ROLE: role_name,
        L.MS_ROLE_ID: rid,
        L.MS_REVISION: revision,
        L.MS_ROLE_TEMPLATE_HASH: _template_hash(bp, role),
    }
    if entry:
        labels[L.MS_ENTRY] = L.ENTRY_VALUE
    annotations = dict(template_meta.get("annotations") or {})
    spec = _json_copy(template.get("spec") or {})
    if bp.get("schedulerName"):
        spec["schedulerName"] = bp["schedulerName"]
    else:
        spec.pop("schedulerName", None)
    entry_name = L.entry_pod_name(group, rid)
    injected = {
        L.ENV_GROUP_SIZE: str(_int(role.get("workerReplicas"), 0) + 1),
        L.ENV_ENTRY_ADDRESS: f"{entry_name}.{owner['namespace']}",
        L.ENV_WORKER_INDEX: str(index),
    }
    _inject_env(spec.get("containers") or [], injected)
    _inject_env(spec.get("initContainers") or [], injected)
    if uses_pod_groups(bp):
        annotations[L.VOLCANO_GROUP_NAME_ANNOTATION] = group
        annotations[L.VOLCANO_TASK_SPEC_ANNOTATION] = rid
    metadata: dict[str, Any] = {
        "name": L.pod_name(group, rid, index),
        "namespace": owner["namespace"],
        "labels": labels,
        "ownerReferences": [_owner_reference(owner)],
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    metadata["annotations"] = annotations
    apply_plugins(bp, pod, role_name, ordinal, index)
    if not metadata["annotations"]:
        del metadata["annotations"]
    return pod


# --------------------------------------------------------------------------- plugins (§6.9)

BUILT_IN = "BuiltIn"
DEMO_POD_TWEAKS = "demo-pod-tweaks"
LWS_STANDARD_LABELS = "lws-standard-labels"
LWS_KIND = "LeaderWorkerSet"
LWS_NAME = "leaderworkerset.sigs.k8s.io/name"
LWS_GROUP_INDEX = "leaderworkerset.sigs.k8s.io/group-index"
LWS_WORKER_INDEX = "leaderworkerset.sigs.k8s.io/worker-index"
LWS_GROUP_KEY = "leaderworkerset.sigs.k8s.io/group-key"


def plugin_errors(plugins: Any) -> list[tuple[str, str]]:
    """(field path, message) for every plugin entry the chain cannot be built from."""
    errors: list[tuple[str, str]] = []
    for index, plugin in enumerate(plugins or []):
        name = (plugin or {}).get("name", "")
        kind = (plugin or {}).get("type") or BUILT_IN
        if kind != BUILT_IN:
            errors.append((f"spec.plugins[{index}].type", f"plugin {name} has unsupported type {kind}"))
        elif name not in (DEMO_POD_TWEAKS, LWS_STANDARD_LABELS):
            errors.append((f"spec.plugins[{index}].name", f"plugin {name} not registered"))
    return errors


def _in_scope(plugin: dict[str, Any], role_name: str, entry: bool) -> bool:
    scope = plugin.get("scope")
    if not scope:
        return True
    roles = scope.get("roles") or []
    if roles and role_name not in roles:
        return False
    target = scope.get("target") or ""
    return target in ("", "All", "Entry" if entry else "Worker")


def apply_plugins(bp: dict[str, Any], pod: dict[str, Any], role_name: str, ordinal: int, index: int) -> None:
    """Run the ModelServing's built-in plugins on one pod, in list order (``spec/serving.md`` §6.9)."""
    for plugin in bp.get("plugins") or []:
        if not _in_scope(plugin, role_name, index == 0):
            continue
        name = plugin.get("name")
        if name == DEMO_POD_TWEAKS:
            config = plugin.get("config") or {}
            if config.get("runtimeClassName"):
                pod["spec"]["runtimeClassName"] = config["runtimeClassName"]
            pod["metadata"]["annotations"].update(config.get("annotations") or {})
            extra = [dict(item) for item in config.get("env") or []]
            for container in (pod["spec"].get("containers") or []) + (
                pod["spec"].get("initContainers") or []
            ):
                container["env"] = [*(container.get("env") or []), *copy.deepcopy(extra)]
        elif name == LWS_STANDARD_LABELS and bp.get("lwsOwner"):
            lws = bp["lwsOwner"]
            pod["metadata"]["labels"].update(
                {
                    LWS_NAME: lws,
                    LWS_GROUP_INDEX: str(ordinal),
                    LWS_WORKER_INDEX: str(index),
                    LWS_GROUP_KEY: hashlib.sha1(f"{lws}-{ordinal}".encode()).hexdigest(),
                }
            )


def render_service(bp: dict[str, Any], ordinal: int, role_name: str, role_ordinal: int) -> dict[str, Any]:
    """The headless Service named like the entry pod (``spec/serving.md`` §2.4)."""
    owner = bp["owner"]
    group = L.group_name(owner["name"], ordinal)
    rid = L.role_id(role_name, role_ordinal)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": L.entry_pod_name(group, rid),
            "namespace": owner["namespace"],
            "labels": {
                L.MS_NAME: owner["name"],
                L.MS_GROUP_NAME: group,
                L.MS_ROLE: role_name,
                L.MS_ROLE_ID: rid,
            },
            "ownerReferences": [_owner_reference(owner)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {
                L.MS_GROUP_NAME: group,
                L.MS_ROLE: role_name,
                L.MS_ROLE_ID: rid,
                L.MS_ENTRY: L.ENTRY_VALUE,
            },
        },
    }


def render_group(workload: ServingWorkload, ordinal: int) -> list[dict[str, Any]]:
    """Every object of ServingGroup ``ordinal``: PodGroup?, then per role replica Service?, entry, workers."""
    if ordinal < 0:
        raise ValueError(f"a group ordinal cannot be negative: {ordinal}")
    bp = workload.blueprint
    objects: list[dict[str, Any]] = []
    if uses_pod_groups(bp):
        objects.append(render_pod_group(bp, ordinal))
    for role in bp["template"].get("roles") or []:
        workers = _int(role.get("workerReplicas"), 0)
        has_worker_template = role.get("workerTemplate") is not None
        for role_ordinal in range(_int(role.get("replicas"), 1)):
            if has_worker_template:
                objects.append(render_service(bp, ordinal, role.get("name", ""), role_ordinal))
            objects.append(render_pod(bp, workload.revision, ordinal, role, role_ordinal, 0))
            if has_worker_template:
                for index in range(1, workers + 1):
                    objects.append(render_pod(bp, workload.revision, ordinal, role, role_ordinal, index))
    return objects


def group_pod_names(workload: ServingWorkload, ordinal: int) -> list[str]:
    """The pod names :func:`render_group` renders for ``ordinal`` (without rendering them)."""
    bp = workload.blueprint
    group = L.group_name(bp["owner"]["name"], ordinal)
    names: list[str] = []
    for role in bp["template"].get("roles") or []:
        workers = _int(role.get("workerReplicas"), 0) if role.get("workerTemplate") is not None else 0
        for role_ordinal in range(_int(role.get("replicas"), 1)):
            rid = L.role_id(role.get("name", ""), role_ordinal)
            names += [L.pod_name(group, rid, index) for index in range(workers + 1)]
    return names
