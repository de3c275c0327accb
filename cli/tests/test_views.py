"""Rendering of get/describe from plain objects (no cluster)."""

from __future__ import annotations

from datetime import UTC, datetime

from ferry_cli import views
from ferry_cli.describe import last_reconcile_trace
from ferry_cli.objects import age, endpoints
from ferry_schemas import labels as L
from rich.console import Console

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def render(renderable: object) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def pod(name: str, serving: str, ip: str, ready: bool, entry: bool = True, role: str = "leader") -> dict:
    labels = {L.MS_NAME: serving, L.MS_ROLE: role, L.BOOSTER_MODEL_NAME: "qwen"}
    if entry:
        labels[L.MS_ENTRY] = L.ENTRY_VALUE
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "sidecar", "ports": [{"containerPort": 8100}]}]},
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def booster(name: str = "qwen", active: str = "True") -> dict:
    return {
        "metadata": {
            "name": name,
            "namespace": "ns",
            "uid": "u1",
            "creationTimestamp": "2026-01-02T03:00:00Z",
        },
        "spec": {"backend": {"name": "cpu", "type": "vLLM", "replicas": 2}},
        "status": {
            "replicas": 2,
            "availableReplicas": 1,
            "conditions": [{"type": "Active", "status": active}, {"type": "Failed", "status": "False"}],
        },
    }


def test_age_reads_like_kubectl() -> None:
    assert age({"metadata": {"creationTimestamp": "2026-01-02T03:03:50Z"}}, NOW) == "15s"
    assert age({"metadata": {"creationTimestamp": "2026-01-02T02:54:05Z"}}, NOW) == "10m"
    assert age({"metadata": {"creationTimestamp": "2025-12-30T03:04:05Z"}}, NOW) == "3d"


def test_models_table_counts_ready_entry_pods() -> None:
    pods = [
        pod("a", "qwen-cpu", "127.0.0.2", True),
        pod("b", "qwen-cpu", "127.0.0.3", False),
        pod("w", "qwen-cpu", "127.0.0.4", True, entry=False),
    ]
    text = render(views.models_table([booster()], pods, NOW))
    assert text.split("\n")[0].split() == ["NAME", "ACTIVE", "FAILED", "REPLICAS", "ENDPOINTS", "AGE"]
    assert text.split("\n")[1].split() == ["qwen", "True", "False", "1/2", "1/2", "4m"]


def test_servings_table_lists_ready_addresses() -> None:
    serving = {
        "metadata": {"name": "qwen-cpu", "labels": {L.BOOSTER_MODEL_NAME: "qwen"}},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "availableReplicas": 1, "updatedReplicas": 2},
    }
    pods = [pod("a", "qwen-cpu", "127.0.0.2", True), pod("b", "qwen-cpu", "127.0.0.3", False)]
    server = {
        "spec": {
            "workloadSelector": {"matchLabels": {L.BOOSTER_MODEL_NAME: "qwen"}},
            "workloadPort": {"port": 8000},
        }
    }
    row = render(views.servings_table([serving], pods, [server], NOW)).split("\n")[1].split()
    assert row[:5] == ["qwen-cpu", "qwen", "1/2", "2", "127.0.0.2:8000"]


def test_routes_table_shows_targets_with_weights() -> None:
    route = {
        "metadata": {"name": "qwen"},
        "spec": {
            "modelName": "qwen",
            "rules": [{"targetModels": [{"modelServerName": "a", "weight": 80}, {"modelServerName": "b"}]}],
            "rateLimit": {"inputTokensPerUnit": 10, "unit": "minute"},
        },
    }
    text = render(views.routes_table([route], NOW))
    assert "a (80), b" in text
    assert "in 10/minute" in text


def test_children_tree_shows_conditions_pods_and_routes() -> None:
    serving = {
        "metadata": {"name": "qwen-cpu"},
        "spec": {"replicas": 1},
        "status": {"availableReplicas": 1, "conditions": [{"type": "Available", "status": "True"}]},
    }
    route = {"metadata": {"name": "qwen"}, "spec": {"modelName": "qwen", "rules": []}}
    tree = views.children_tree(
        booster(active="False"),
        {"ModelServing": [serving], "ModelRoute": [route]},
        [pod("qwen-cpu-0-leader-0-0", "qwen-cpu", "127.0.0.2", True)],
        [{"metadata": {"name": "qwen-cpu-0", "labels": {L.MS_NAME: "qwen-cpu"}}, "spec": {"minMember": 1}}],
    )
    text = render(tree)
    assert "ModelBooster/qwen" in text
    assert "Active=False" in text
    assert "ModelServing/qwen-cpu" in text
    assert "Available=True" in text
    assert "PodGroup/qwen-cpu-0  minMember 1" in text
    assert "Pod/qwen-cpu-0-leader-0-0  leader 127.0.0.2  Running  Ready" in text
    assert "ModelRoute/qwen  model qwen" in text


def test_endpoints_skip_workers_and_name_the_address() -> None:
    found = endpoints([pod("a", "s", "127.0.0.9", True), pod("w", "s", "127.0.0.8", True, entry=False)], [])
    assert [(e.pod, e.address, e.ready) for e in found] == [("a", "127.0.0.9:8100", True)]  # no ModelServer


def test_related_events_keep_the_newest_of_the_model_only() -> None:
    def event(name: str, at: str) -> dict:
        return {"metadata": {}, "involvedObject": {"kind": "Pod", "name": name}, "lastTimestamp": at}

    events = [
        event("x", "2026-01-01T00:00:03Z"),
        event("a", "2026-01-01T00:00:02Z"),
        event("a", "2026-01-01T00:00:01Z"),
    ]
    picked = views.related_events(events, {"a"}, limit=1)
    assert [e["lastTimestamp"] for e in picked] == ["2026-01-01T00:00:02Z"]


def test_events_table_says_how_long_ago_like_kubectl() -> None:
    event = {
        "metadata": {},
        "regarding": {"kind": "ModelServing", "name": "qwen-cpu"},
        "eventTime": "2026-01-02T03:03:20.000000Z",  # events.k8s.io MicroTime
        "type": "Normal",
        "reason": "Created",
        "note": "Pod qwen-cpu-0 created",
    }
    row = render(views.events_table([event], NOW)).splitlines()[1].split()
    assert row[:3] == ["45s", "Normal", "Created"]


def test_last_reconcile_trace_prefers_a_full_newer_trace_of_this_model() -> None:
    subject = "ferry.obj.modelboosters.ns.qwen"

    def span(trace: str, service: str, start: int, name: str = subject) -> dict:
        return {
            "traceId": trace,
            "spanId": f"{trace}{service}",
            "service": service,
            "start": start,
            "name": name,
        }

    full = [span("t1", s, 10) for s in ("ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status")]
    partial_newer = [span("t2", "ferry-watcher", 99)]
    other = [
        span("t3", s, 200, "ferry.obj.modelboosters.ns.other") for s in ("ferry-watcher", "ferry-status")
    ]
    picked = last_reconcile_trace(full + partial_newer + other, "ns", "qwen")
    assert picked is not None
    assert {s["traceId"] for s in picked} == {"t1"}
    assert last_reconcile_trace(other, "ns", "qwen") is None


def test_last_reconcile_trace_prefers_the_one_that_applied_over_a_newer_status_echo() -> None:
    subject = "ferry.obj.modelboosters.ns.qwen"
    services = ("ferry-watcher", "ferry-converter", "ferry-applier", "ferry-status")

    def trace(trace_id: str, start: int, applier_span: str) -> list[dict]:
        return [
            {
                "traceId": trace_id,
                "spanId": f"{trace_id}{service}",
                "service": service,
                "start": start,
                "name": applier_span if service == "ferry-applier" else subject,
            }
            for service in services
        ]

    applied = trace("t1", 10, "applier reconcile")
    status_echo = trace("t2", 99, f"ferry-applier process {subject}")  # the MODIFIED of a status write
    picked = last_reconcile_trace(applied + status_echo, "ns", "qwen")
    assert picked is not None
    assert {s["traceId"] for s in picked} == {"t1"}
