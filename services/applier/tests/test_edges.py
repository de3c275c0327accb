"""Edges of the applier: error classes, back-off, child preparation, subject filters."""

from __future__ import annotations

import json

import aiohttp
import pytest
from ferry_applier.children import prepare_child
from ferry_applier.errors import api_message, api_reason, backoff_delay, is_permanent, is_transient
from ferry_applier.generations import AppliedGeneration, Verdict, is_stale, verdict
from ferry_applier.kinds import UnknownKindError, kind_info
from ferry_applier.lease import LeaseBusy
from ferry_applier.service import durable_name, subject_filter
from ferry_schemas.bus import OwnerKey
from ferry_schemas.runtime.kubeconn import ApiError

OWNER = OwnerKey(
    api_version="workload.serving.volcano.sh/v1alpha1",
    kind="ModelBooster",
    resource="modelboosters",
    namespace="ns",
    name="b",
    uid="u-1",
    generation=3,
)


def api_error(status: int, reason: str = "", message: str = "") -> ApiError:
    return ApiError(status, reason, json.dumps({"kind": "Status", "reason": reason, "message": message}))


@pytest.mark.parametrize(
    ("status", "permanent"),
    [
        (400, True),
        (404, True),
        (422, True),
        (409, False),
        (429, False),
        (500, False),
        (503, False),
        (403, False),
    ],
)
def test_api_errors_are_permanent_or_transient(status: int, permanent: bool) -> None:
    exc = api_error(status)
    assert is_permanent(exc) is permanent
    assert is_transient(exc) is not permanent


def test_network_trouble_and_busy_leases_are_transient() -> None:
    assert is_transient(aiohttp.ClientConnectionError("refused"))
    assert is_transient(TimeoutError())
    assert is_transient(LeaseBusy("held"))
    assert not is_transient(ValueError("a bug"))


def test_the_api_servers_own_words_are_kept() -> None:
    exc = api_error(422, "Invalid", 'ModelRoute.networking "bad" is invalid: spec.rules[0]: Too many')
    assert api_reason(exc) == "Invalid"
    assert api_message(exc).endswith("Too many")
    raw = ApiError(502, "Bad Gateway", "upstream down")
    assert api_message(raw) == "upstream down"


@pytest.mark.parametrize(
    ("deliveries", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]
)
def test_backoff_doubles_up_to_its_cap(deliveries: int, delay: float) -> None:
    assert backoff_delay(deliveries, base=0.5, cap=30.0) == delay


def test_prepare_child_places_it_in_the_owners_namespace_with_a_controller_reference() -> None:
    child = {
        "apiVersion": "networking.serving.volcano.sh/v1alpha1",
        "kind": "ModelRoute",
        "metadata": {"name": "r", "namespace": "elsewhere"},
        "spec": {},
        "status": {"stale": True},
    }
    body = prepare_child(OWNER, child)
    assert body["metadata"]["namespace"] == "ns"
    assert body["metadata"]["ownerReferences"] == [OWNER.owner_reference()]
    assert "status" not in body
    assert child["metadata"]["namespace"] == "elsewhere"  # the input is not mutated
    assert prepare_child(OWNER, body)["metadata"]["ownerReferences"] == [OWNER.owner_reference()]  # once


@pytest.mark.parametrize(
    ("child", "message"),
    [
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            "cannot manage kind 'ConfigMap'",
        ),
        ({"apiVersion": "v2", "kind": "ModelRoute", "metadata": {"name": "x"}}, "must have apiVersion"),
    ],
)
def test_unknown_kinds_are_refused_clearly(child: dict[str, object], message: str) -> None:
    with pytest.raises(UnknownKindError, match=message):
        prepare_child(OWNER, child)


def test_kinds_by_kind_or_plural() -> None:
    assert kind_info("modelroutes") is kind_info("ModelRoute")
    assert kind_info("PodGroup").api_version == "scheduling.volcano.sh/v1beta1"
    assert not kind_info("Pod").is_custom
    assert kind_info("ModelServing").is_custom


def test_subject_filters_and_durables_per_namespace() -> None:
    assert subject_filter("") == "ferry.desired.>"
    assert subject_filter("team.a") == "ferry.desired.*.team_a.*"
    assert durable_name("applier-desired", "") == "applier-desired"
    assert durable_name("applier-desired", "ns") == "applier-desired-ns"


@pytest.mark.parametrize(
    ("applied", "stale"),
    [
        (None, False),  # nothing applied yet
        (AppliedGeneration("u-1", 2, 1), False),  # newer arrives
        (AppliedGeneration("u-1", 3, 1), False),  # the same generation again: level-triggered, re-applied
        (AppliedGeneration("u-1", 4, 1), True),  # older than what was applied: dropped
        (AppliedGeneration("u-0", 9, 1), False),  # another object of the same name (recreated owner)
    ],
)
def test_generation_guard(applied: AppliedGeneration | None, stale: bool) -> None:
    assert is_stale(OWNER, applied) is stale


@pytest.mark.parametrize(
    ("applied", "latest", "expected"),
    [
        (None, False, Verdict.APPLY),  # nothing applied yet: the delivered set is the first
        (AppliedGeneration("u-1", 2, 1, sequence=10), False, Verdict.APPLY),  # delivered after 10
        (AppliedGeneration("u-1", 3, 1, sequence=20), False, Verdict.APPLY),  # this very set again
        (AppliedGeneration("u-1", 3, 1, sequence=21), False, Verdict.BEHIND),  # a later one was applied
        (AppliedGeneration("u-1", 3, 1, sequence=21), True, Verdict.APPLY),  # ... and this one was read
        (AppliedGeneration("u-1", 2, 1, sequence=0), False, Verdict.BEHIND),  # no sequence: cannot tell
        (AppliedGeneration("u-1", 4, 1, sequence=5), False, Verdict.STALE),  # an older generation
        (AppliedGeneration("u-0", 9, 1, sequence=30, deleted=True), False, Verdict.BEHIND),  # tombstone later
    ],
)
def test_a_delivered_set_needs_no_read_unless_a_later_one_was_applied(
    applied: AppliedGeneration | None, latest: bool, expected: Verdict
) -> None:
    assert verdict(OWNER, 20, applied, latest=latest) is expected
