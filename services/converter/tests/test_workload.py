"""ModelServing → workload and the ServingGroup renderer (``spec/serving.md`` §2-§3, §7.6-§7.8 cases)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from ferry_converter.serving.convert import convert_serving
from ferry_local.paths import shared_dir
from ferry_schemas import labels as L
from ferry_schemas.bus import ServingWorkload
from ferry_schemas.models import ModelServing, PodGroup
from ferry_schemas.workload import (
    blueprint,
    group_pod_names,
    render_group,
    role_template_hash,
    serving_revision,
)

EXAMPLES = shared_dir() / "reference" / "kthena" / "head" / "examples" / "model-serving"


def example(name: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    obj.setdefault("metadata", {}).setdefault("namespace", "default")
    obj["metadata"].setdefault("uid", "ms-uid")
    return obj


def container(
    name: str, cpu: str = "", memory: str = "", env: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    out: dict[str, Any] = {"name": name, "image": "img"}
    if requests:
        out["resources"] = {"requests": requests}
    if env is not None:
        out["env"] = env
    return out


def role(
    name: str, replicas: int | None, workers: int, entry: dict[str, Any], worker: dict[str, Any] | None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": name,
        "workerReplicas": workers,
        "entryTemplate": {"spec": {"containers": [entry]}},
    }
    if replicas is not None:
        out["replicas"] = replicas
    if worker is not None:
        out["workerTemplate"] = {"spec": {"containers": [worker]}}
    return out


def serving(roles: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "workload.serving.volcano.sh/v1alpha1",
        "kind": "ModelServing",
        "metadata": {"name": "ms", "namespace": "ns", "uid": "ms-uid"},
        "spec": {"replicas": 1, "schedulerName": "volcano", "template": {"roles": roles}, **spec},
    }


def workload(obj: dict[str, Any]) -> ServingWorkload:
    result, errors = convert_serving(obj)
    assert errors == []
    assert result is not None
    return result


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


# --------------------------------------------------------------------------- names (§2.1)


def test_sample_names() -> None:
    objects = render_group(workload(example("sample.yaml")), 0)
    pods = [o["metadata"]["name"] for o in by_kind(objects, "Pod")]
    assert pods == [
        *(f"sample-0-prefill-0-{i}" for i in range(4)),
        *(f"sample-0-decode-0-{i}" for i in range(4)),
    ]
    assert [o["metadata"]["name"] for o in by_kind(objects, "Service")] == [
        "sample-0-prefill-0-0",
        "sample-0-decode-0-0",
    ]
    assert [o["metadata"]["name"] for o in by_kind(objects, "PodGroup")] == ["sample-0"]
    assert group_pod_names(workload(example("sample.yaml")), 0) == pods


def test_other_ordinals() -> None:
    pods = [o["metadata"]["name"] for o in by_kind(render_group(workload(example("sample.yaml")), 7), "Pod")]
    assert pods[0] == "sample-7-prefill-0-0"


@pytest.mark.parametrize(
    ("pod", "slot"),
    [
        ("ms-0-prefill-0-0", (0, "prefill", 0, 0)),
        ("ms-12-prefill-2-1-3", (12, "prefill-2", 1, 3)),
        ("ms-x-0-prefill-0-0", None),
        ("ms-01-prefill-0-0", None),
        ("other-0-prefill-0-0", None),
        ("ms-3", None),
        ("ms-3-0-0", None),
    ],
)
def test_pod_slot_reads_the_name(pod: str, slot: tuple[int, str, int, int] | None) -> None:
    assert L.pod_slot("ms", pod) == slot


def test_every_managed_label_keeps_ferrys_value_on_entry_and_worker_pods() -> None:
    obj = serving([role("prefill", 1, 1, container("engine"), container("worker"))])
    hijack = {key: "user" for key in L.MANAGED_POD_LABELS} | {"team": "a"}
    for template in ("entryTemplate", "workerTemplate"):
        obj["spec"]["template"]["roles"][0][template]["metadata"] = {"labels": dict(hijack)}
    entry, worker = by_kind(render_group(workload(obj), 0), "Pod")
    for pod in (entry, worker):
        labels = pod["metadata"]["labels"]
        assert labels["team"] == "a"
        assert labels[L.MS_NAME] == "ms"
        assert labels[L.MS_GROUP_NAME] == "ms-0"
        assert labels[L.MS_ROLE_ID] == "prefill-0"
        assert "user" not in {labels[key] for key in L.MANAGED_POD_LABELS if key in labels}
    assert entry["metadata"]["labels"][L.MS_ENTRY] == "true"
    assert L.MS_ENTRY not in worker["metadata"]["labels"]  # a worker never claims to be the entry


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("ms-0", ("ms", 0)),
        ("prefill-3", ("prefill", 3)),
        ("a-b-12", ("a-b", 12)),
        ("nosuffix", ("nosuffix", -1)),
    ],
)
def test_parse_ordinal(name: str, parsed: tuple[str, int]) -> None:
    assert L.parse_ordinal(name) == parsed


def test_parse_ordinal_overflow() -> None:
    assert L.parse_ordinal("ms-99999999999")[1] == -1


# --------------------------------------------------------------------------- pods (§2.3)


def _two_role() -> dict[str, Any]:
    entry = container(
        "engine", env=[{"name": "WORKER_INDEX", "value": "stale"}, {"name": "KEEP", "value": "1"}]
    )
    obj = serving([role("prefill", 2, 2, entry, container("worker"))])
    obj["spec"]["template"]["roles"][0]["entryTemplate"]["metadata"] = {
        "labels": {"app": "x", L.MS_ROLE: "overridden"},
        "annotations": {"a": "b"},
    }
    obj["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["initContainers"] = [container("init")]
    obj["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["schedulerName"] = "ignored"
    return obj


def test_entry_pod_labels_annotations_and_owner() -> None:
    w = workload(_two_role())
    entry = by_kind(render_group(w, 1), "Pod")[0]
    meta = entry["metadata"]
    assert meta["name"] == "ms-1-prefill-0-0"
    assert meta["namespace"] == "ns"
    assert meta["labels"] == {
        L.MS_NAME: "ms",
        L.MS_GROUP_NAME: "ms-1",
        L.MS_ROLE: "prefill",  # Ferry's labels win over the template's (Kthena: the template's)
        L.MS_ROLE_ID: "prefill-0",
        L.MS_REVISION: w.revision,
        L.MS_ROLE_TEMPLATE_HASH: role_template_hash(_two_role()["spec"]["template"]["roles"][0]),
        L.MS_ENTRY: "true",
        "app": "x",
    }
    assert meta["annotations"] == {
        "a": "b",
        L.VOLCANO_GROUP_NAME_ANNOTATION: "ms-1",
        L.VOLCANO_TASK_SPEC_ANNOTATION: "prefill-0",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "workload.serving.volcano.sh/v1alpha1",
            "kind": "ModelServing",
            "name": "ms",
            "uid": "ms-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert entry["spec"]["schedulerName"] == "volcano"


def test_worker_pods_have_no_entry_label() -> None:
    pods = by_kind(render_group(workload(_two_role()), 0), "Pod")
    workers = [p for p in pods if not p["metadata"]["name"].endswith("-0")]
    assert [p["metadata"]["name"] for p in workers] == [
        "ms-0-prefill-0-1",
        "ms-0-prefill-0-2",
        "ms-0-prefill-1-1",
        "ms-0-prefill-1-2",
    ]
    assert all(L.MS_ENTRY not in p["metadata"]["labels"] for p in workers)


def test_injected_env() -> None:
    pods = by_kind(render_group(workload(_two_role()), 0), "Pod")
    entry = pods[0]
    for c in entry["spec"]["containers"] + entry["spec"]["initContainers"]:
        tail = c["env"][-3:]
        assert tail == [
            {"name": "GROUP_SIZE", "value": "3"},
            {"name": "ENTRY_ADDRESS", "value": "ms-0-prefill-0-0.ns"},
            {"name": "WORKER_INDEX", "value": "0"},
        ]
    engine_env = entry["spec"]["containers"][0]["env"]
    assert [e["name"] for e in engine_env] == ["KEEP", "GROUP_SIZE", "ENTRY_ADDRESS", "WORKER_INDEX"]
    second_worker = pods[2]
    assert second_worker["spec"]["containers"][0]["env"][-1] == {"name": "WORKER_INDEX", "value": "2"}
    assert second_worker["spec"]["containers"][0]["env"][-2] == {
        "name": "ENTRY_ADDRESS",
        "value": "ms-0-prefill-0-0.ns",
    }


def test_no_volcano_annotations_or_podgroup_for_other_schedulers() -> None:
    obj = _two_role()
    obj["spec"]["schedulerName"] = "default-scheduler"
    objects = render_group(workload(obj), 0)
    assert by_kind(objects, "PodGroup") == []
    entry = by_kind(objects, "Pod")[0]
    assert L.VOLCANO_GROUP_NAME_ANNOTATION not in entry["metadata"]["annotations"]
    assert entry["spec"]["schedulerName"] == "default-scheduler"


def test_render_does_not_mutate_the_workload() -> None:
    w = workload(_two_role())
    before = copy.deepcopy(w.blueprint)
    render_group(w, 0)
    assert w.blueprint == before


def test_negative_ordinal() -> None:
    with pytest.raises(ValueError, match="negative"):
        render_group(workload(_two_role()), -1)


# --------------------------------------------------------------------------- services (§2.4)


def test_headless_service() -> None:
    (service,) = by_kind(
        render_group(workload(serving([role("r", 1, 0, container("e"), container("w"))])), 0), "Service"
    )
    assert service["metadata"]["labels"] == {
        L.MS_NAME: "ms",
        L.MS_GROUP_NAME: "ms-0",
        L.MS_ROLE: "r",
        L.MS_ROLE_ID: "r-0",
    }
    assert service["spec"] == {
        "clusterIP": "None",
        "publishNotReadyAddresses": True,
        "selector": {L.MS_GROUP_NAME: "ms-0", L.MS_ROLE: "r", L.MS_ROLE_ID: "r-0", L.MS_ENTRY: "true"},
    }


def test_no_service_without_worker_template() -> None:
    objects = render_group(workload(serving([role("r", 1, 0, container("e"), None)])), 0)
    assert by_kind(objects, "Service") == []


def test_workers_without_template_render_only_the_entry() -> None:
    objects = render_group(workload(serving([role("r", 1, 2, container("e"), None)])), 0)
    assert [p["metadata"]["name"] for p in by_kind(objects, "Pod")] == ["ms-0-r-0-0"]


# --------------------------------------------------------------------------- PodGroup (§3.3, §7.6)


def _requirements(
    prefill_workers: int = 3, decode_worker: bool = True, gang: dict[str, int] | None = None
) -> dict[str, Any]:
    prefill = role("prefill", 2, prefill_workers, container("e", "1", "2Gi"), container("w", "2", "4Gi"))
    decode = role(
        "decode",
        1,
        2 if decode_worker else 0,
        container("e", "1", "1Gi"),
        container("w", "1", "2Gi") if decode_worker else None,
    )
    obj = serving([prefill, decode])
    if gang is not None:
        obj["spec"]["template"]["gangPolicy"] = {"minRoleReplicas": gang}
    return obj


def pod_group(obj: dict[str, Any]) -> dict[str, Any]:
    (group,) = by_kind(render_group(workload(obj), 0), "PodGroup")
    PodGroup.model_validate(group)
    return group


@pytest.mark.parametrize(
    ("obj", "min_member", "resources"),
    [
        (_requirements(), 11, {"cpu": "17", "memory": "33Gi"}),
        (_requirements(gang={"prefill": 1, "decode": 1}), 7, {"cpu": "10", "memory": "19Gi"}),
        (_requirements(gang=None), 11, {"cpu": "17", "memory": "33Gi"}),
        (_requirements(decode_worker=False), 9, {"cpu": "15", "memory": "29Gi"}),
        (_requirements(prefill_workers=0), 5, {"cpu": "5", "memory": "9Gi"}),
    ],
)
def test_calculate_requirements(obj: dict[str, Any], min_member: int, resources: dict[str, str]) -> None:
    spec = pod_group(obj)["spec"]
    assert spec["minMember"] == min_member
    assert spec["minResources"] == resources


def test_min_task_member() -> None:
    spec = pod_group(_requirements(gang={"prefill": 1, "decode": 1}))["spec"]
    assert spec["minTaskMember"] == {"prefill-0": 4, "decode-0": 3}
    spec = pod_group(_requirements())["spec"]
    assert spec["minTaskMember"] == {"prefill-0": 4, "prefill-1": 4, "decode-0": 3}


def test_gang_policy_example() -> None:
    obj = serving(
        [
            role("prefill", 2, 1, container("e"), container("w")),
            role("decode", 2, 1, container("e"), container("w")),
        ]
    )
    obj["spec"]["template"]["gangPolicy"] = {"minRoleReplicas": {"prefill": 2, "decode": 1}}
    spec = pod_group(obj)["spec"]
    assert spec["minMember"] == 6
    assert [(s["name"], s["minSubGroups"], s["subGroupSize"]) for s in spec["subGroupPolicy"]] == [
        ("prefill", 2, 2),
        ("decode", 1, 2),
    ]
    assert spec["subGroupPolicy"][0]["labelSelector"] == {
        "matchLabels": {L.MS_NAME: "ms", L.MS_ROLE: "prefill"}
    }
    assert spec["subGroupPolicy"][0]["matchLabelKeys"] == [L.MS_ROLE_ID]
    assert "minResources" not in spec


def test_sub_group_policy_without_min_role_replicas_uses_replicas() -> None:
    spec = pod_group(serving([role("r", 3, 1, container("e"), container("w"))]))["spec"]
    assert spec["subGroupPolicy"][0]["minSubGroups"] == 3


def test_network_topology_and_queue() -> None:
    obj = serving([role("r", 1, 0, container("e"), None)])
    obj["spec"]["template"]["networkTopology"] = {
        "groupPolicy": {"mode": "hard", "highestTierAllowed": 2},
        "rolePolicy": {"mode": "soft"},
    }
    obj["metadata"]["annotations"] = {L.VOLCANO_QUEUE_ANNOTATION: "q1"}
    group = pod_group(obj)
    assert group["spec"]["networkTopology"] == {"mode": "hard", "highestTierAllowed": 2}
    assert group["spec"]["subGroupPolicy"][0]["networkTopology"] == {"mode": "soft"}
    assert group["spec"]["queue"] == "q1"
    assert group["metadata"]["labels"] == {L.MS_NAME: "ms", L.MS_GROUP_NAME: "ms-0"}
    assert group["metadata"]["annotations"] == {L.VOLCANO_GROUP_NAME_ANNOTATION: "ms-0"}
    assert "blockOwnerDeletion" not in group["metadata"]["ownerReferences"][0]


def test_no_queue_and_topology_when_absent() -> None:
    spec = pod_group(serving([role("r", 1, 0, container("e"), None)]))["spec"]
    assert "queue" not in spec
    assert "networkTopology" not in spec
    assert "networkTopology" not in spec["subGroupPolicy"][0]


# --------------------------------------------------------------------------- revisions (§2.6, §7.7)


def _roles() -> list[dict[str, Any]]:
    return [role("a", 2, 1, container("e"), container("w")), role("b", 1, 0, container("e"), None)]


def test_revision_ignores_replicas_and_rolling_fields() -> None:
    base = serving_revision(_roles())
    changed = _roles()
    changed[0]["replicas"] = 5
    changed[0]["maxUnavailable"] = 2
    changed[0]["partition"] = 1
    del changed[1]["replicas"]
    assert serving_revision(changed) == base
    assert role_template_hash(changed[0]) == role_template_hash(_roles()[0])


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r[0].update(name="c"),
        lambda r: r[0].update(workerReplicas=3),
        lambda r: r.pop(),
        lambda r: r[0]["entryTemplate"]["spec"]["containers"][0].update(image="other"),
    ],
)
def test_revision_changes(change: Any) -> None:
    roles = _roles()
    change(roles)
    assert serving_revision(roles) != serving_revision(_roles())


def test_revision_does_not_mutate() -> None:
    roles = _roles()
    serving_revision(roles)
    role_template_hash(roles[0])
    assert roles == _roles()


def test_revision_ignores_spec_outside_roles() -> None:
    a = workload(serving(_roles()))
    obj = serving(_roles(), replicas=4, schedulerName="other")
    obj["spec"]["template"]["gangPolicy"] = {"minRoleReplicas": {"a": 1}}
    obj["spec"]["template"]["restartGracePeriodSeconds"] = 30
    assert workload(obj).revision == a.revision
    assert workload(obj).replicas == 4


# --------------------------------------------------------------------------- names (§1.8 rule 1, §7.8)


def test_valid_pod_name_length() -> None:
    workload(serving(_roles()))
    obj = serving(_roles())
    obj["metadata"]["name"] = "m" * 60
    result, errors = convert_serving(obj)
    assert result is None
    assert errors[0].field == "metadata.name"
    assert "invalid name" in errors[0].message
    assert "must be no more than 63 characters" in errors[0].message


def test_missing_replicas_count_as_one() -> None:
    obj = serving([role("r", None, 0, container("e"), None)])
    del obj["spec"]["replicas"]
    w = workload(obj)
    assert w.replicas == 1
    assert [p["metadata"]["name"] for p in by_kind(render_group(w, 0), "Pod")] == ["ms-0-r-0-0"]
    obj["metadata"]["name"] = "m" * 57
    _, errors = convert_serving(obj)
    assert errors, "the generated name uses 1 for missing replica counts and is too long"


def test_role_name_must_be_dns1035() -> None:
    _, errors = convert_serving(serving([role("9role", 1, 0, container("e"), None)]))
    assert errors[0].field == "spec.template.roles[0].name"


def test_no_roles() -> None:
    _, errors = convert_serving(serving([]))
    assert errors[0].field == "spec.template.roles"


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_renders(name: str) -> None:
    docs = [
        d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d and d.get("kind") == "ModelServing"
    ]
    assert docs, f"{name} holds no ModelServing"
    for doc in docs:
        doc["metadata"].setdefault("namespace", "default")
        doc["metadata"]["uid"] = "u"
        ModelServing.model_validate(doc)
        w = workload(doc)
        bp = blueprint(doc)
        assert w.blueprint == bp
        names = [o["metadata"]["name"] for o in render_group(w, 0)]
        assert all(L.is_dns1123_label(n) for n in names), names


# --------------------------------------------------------------------------- plugins (§6.9, §7.5)


def _with_plugins(plugins: list[dict[str, Any]], owner: dict[str, Any] | None = None) -> ServingWorkload:
    obj = serving([role("r", 1, 1, container("e"), container("w"))], plugins=plugins)
    obj["spec"]["template"]["roles"][0]["entryTemplate"]["spec"]["initContainers"] = [container("init")]
    if owner is not None:
        obj["metadata"]["ownerReferences"] = [owner]
    return workload(obj)


def test_demo_plugin_on_pod_create() -> None:
    tweaks = {
        "name": "demo-pod-tweaks",
        "type": "BuiltIn",
        "config": {
            "runtimeClassName": "nvidia",
            "annotations": {"a": "b"},
            "env": [{"name": "EXTRA", "value": "1"}],
        },
    }
    entry, worker = by_kind(render_group(_with_plugins([tweaks]), 0), "Pod")
    for pod in (entry, worker):
        assert pod["spec"]["runtimeClassName"] == "nvidia"
        assert pod["metadata"]["annotations"]["a"] == "b"
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            assert c["env"][-1] == {"name": "EXTRA", "value": "1"}
            assert [e["name"] for e in c["env"]][:3] == ["GROUP_SIZE", "ENTRY_ADDRESS", "WORKER_INDEX"]


def test_chain_ordering_and_scope() -> None:
    p1 = {"name": "demo-pod-tweaks", "config": {"env": [{"name": "P1", "value": "1"}]}}
    p2 = {
        "name": "demo-pod-tweaks",
        "config": {"env": [{"name": "P2", "value": "2"}]},
        "scope": {"target": "Worker"},
    }
    p3 = {
        "name": "demo-pod-tweaks",
        "config": {"env": [{"name": "P3", "value": "3"}]},
        "scope": {"roles": ["other"]},
    }
    entry, worker = by_kind(render_group(_with_plugins([p1, p2, p3]), 0), "Pod")
    assert [e["name"] for e in entry["spec"]["containers"][0]["env"]][3:] == ["P1"]
    assert [e["name"] for e in worker["spec"]["containers"][0]["env"]][3:] == ["P1", "P2"]


@pytest.mark.parametrize(
    ("plugin", "field", "message"),
    [
        (
            {"name": "demo-pod-tweaks", "type": "Unsupported"},
            "spec.plugins[0].type",
            "has unsupported type Unsupported",
        ),
        ({"name": "nope", "type": "BuiltIn"}, "spec.plugins[0].name", "plugin nope not registered"),
    ],
)
def test_plugin_chain_errors(plugin: dict[str, Any], field: str, message: str) -> None:
    _, errors = convert_serving(serving([role("r", 1, 0, container("e"), None)], plugins=[plugin]))
    assert [(e.field, message in e.message) for e in errors] == [(field, True)]


def test_lws_standard_labels() -> None:
    import hashlib

    lws = {
        "apiVersion": "leaderworkerset.x-k8s.io/v1",
        "kind": "LeaderWorkerSet",
        "name": "my-lws",
        "uid": "l",
    }
    w = _with_plugins([{"name": "lws-standard-labels"}], owner=lws)
    entry, worker = by_kind(render_group(w, 2), "Pod")
    assert entry["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/name"] == "my-lws"
    assert entry["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-index"] == "2"
    assert entry["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"
    assert worker["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/worker-index"] == "1"
    key = hashlib.sha1(b"my-lws-2").hexdigest()
    assert worker["metadata"]["labels"]["leaderworkerset.sigs.k8s.io/group-key"] == key
    plain = by_kind(render_group(_with_plugins([{"name": "lws-standard-labels"}]), 0), "Pod")[0]
    assert "leaderworkerset.sigs.k8s.io/name" not in plain["metadata"]["labels"]
