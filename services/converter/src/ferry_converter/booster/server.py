"""ModelBooster backend → ModelServer (``spec/booster.md`` §3.12)."""

from __future__ import annotations

from typing import Any

from ferry_schemas import labels as L

from ferry_converter.booster.backends import SUPPORTED_TYPES, VLLM_DISAGGREGATED, Backend
from ferry_converter.booster.kvconnector import KvConnectorError, kv_connector_spec
from ferry_converter.booster.meta import BoosterRef, child, revision_of, stamp_revision
from ferry_converter.booster.serving import checked_engine_port
from ferry_converter.booster.workers import served_model_name
from ferry_converter.errors import ConversionFailure


def build_model_server(ref: BoosterRef, backend: Backend) -> dict[str, Any]:
    if backend.type not in SUPPORTED_TYPES:
        raise ConversionFailure(
            f"{backend.path}.type", f"not support {backend.type} backend yet, please use vLLM backend"
        )
    port = checked_engine_port(backend)
    selector: dict[str, Any] = {"matchLabels": {L.BOOSTER_MODEL_UID: ref.uid}}
    if backend.type == VLLM_DISAGGREGATED:
        selector["pdGroup"] = {
            "groupKey": L.MS_GROUP_NAME,
            "prefillLabels": {L.MS_ROLE: "prefill"},
            "decodeLabels": {L.MS_ROLE: "decode"},
        }
    spec: dict[str, Any] = {
        "model": served_model_name(backend.workers, ref.name),
        "inferenceEngine": "vLLM",
        "workloadSelector": selector,
        "workloadPort": {"port": port},
        "trafficPolicy": {"retry": {"attempts": 5, "retryInterval": "0s"}},
    }
    try:
        connector = kv_connector_spec(backend.name, backend.workers)
    except KvConnectorError as exc:
        raise ConversionFailure(
            f"{backend.path}.workers", f"invalid kv connector configuration: {exc}"
        ) from None
    if connector is not None:
        spec["kvConnector"] = connector
    obj = child(
        L.NETWORKING_API_VERSION,
        "ModelServer",
        L.booster_child_name(ref.name, backend.name),
        ref,
        backend.name,
        spec,
    )
    stamp_revision(obj, revision_of(spec))
    return obj
