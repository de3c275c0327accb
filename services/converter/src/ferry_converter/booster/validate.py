"""Kthena's ModelBooster admission rules, re-checked by the converter (``spec/booster.md`` §2.3).

Ferry's CRDs enforce what CEL can express; the converter checks every rule again so that a
manifest stored without them (an older CRD, a rule CEL cannot express) still fails with the
same actionable message instead of producing broken children.
"""

from __future__ import annotations

import posixpath
import re

from ferry_schemas.bus import ConversionError

from ferry_converter.booster.backends import VLLM, VLLM_DISAGGREGATED, Backend
from ferry_converter.booster.kvconnector import KvConnectorError, kv_connector_spec
from ferry_converter.booster.storage import cache_path
from ferry_converter.booster.workers import ConfigError, engine_port, worker_type

MAX_REPLICAS = 1_000_000
PD_WORKER_TYPES = ("prefill", "decode")


def _error(field: str, message: str) -> ConversionError:
    return ConversionError(field=field, message=message)


def image_error(image: str) -> str | None:
    """Why a container image reference is invalid, or ``None``."""
    if image and not image.strip():
        return "invalid container image reference: image cannot be empty or whitespace only"
    if any(char.isspace() for char in image):
        return "invalid container image reference: image cannot contain whitespace"
    return None


def _clean(path: str) -> str:
    """Go ``path.Clean`` for an absolute path."""
    cleaned = posixpath.normpath(re.sub("/+", "/", path))
    return "/" if cleaned in ("", ".") else cleaned


def pvc_model_source_path(model_uri: str) -> str:
    source = model_uri.removeprefix("pvc://")
    return _clean(source if source.startswith("/") else "/" + source)


def cache_volume_mount_path(cache_uri: str) -> str:
    """Where the cache volume is mounted ("" for an empty or unusable cacheURI)."""
    path = cache_path(cache_uri)
    return _clean(path) if path else ""


def pvc_errors(backend: Backend) -> list[ConversionError]:
    """``modelURI: pvc://…`` must be reachable through the ``cacheURI: pvc://<claim>`` mount."""
    model_uri, cache_uri = backend.model_uri, backend.cache_uri
    if not model_uri.startswith("pvc://"):
        return []
    if not cache_uri.startswith("pvc://"):
        return [
            _error(
                f"{backend.path}.cacheURI",
                "when modelURI uses pvc://, cacheURI must also use pvc://. The model is read from the PVC "
                "mounted through cacheURI; set cacheURI to pvc://<claim> of the claim holding the model",
            )
        ]
    if ".." in model_uri.removeprefix("pvc://").split("/"):
        return [_error(f"{backend.path}.modelURI", "pvc:// modelURI must not contain '..' path segments")]
    claim = cache_uri.removeprefix("pvc://").strip("/")
    if not claim or "/" in claim:
        return [
            _error(
                f"{backend.path}.cacheURI",
                "pvc:// cacheURI must contain a single PVC claim name with no path separator "
                "(claim names cannot contain '/'), e.g. pvc://my-claim",
            )
        ]
    source = pvc_model_source_path(model_uri)
    mount = "/" + claim
    if source != mount and not source.startswith(mount + "/"):
        return [
            _error(
                f"{backend.path}.modelURI",
                f'PVC source path "{source}" is not reachable via cacheURI mount "{mount}". '
                "modelURI must name a path inside the claim given by cacheURI (pvc://<claim>/<path>)",
            )
        ]
    return []


def backend_errors(backend: Backend) -> list[ConversionError]:
    """Every rule of ``validateModel`` for one backend, in Kthena's order."""
    errors: list[ConversionError] = []
    for key, value in (("replicas", backend.replicas), ("maxReplicas", backend.max_replicas)):
        if value is not None and value > MAX_REPLICAS:
            errors.append(_error(f"{backend.path}.{key}", f"{key} ({value}) cannot exceed {MAX_REPLICAS}"))
    if (
        backend.min_replicas is not None
        and backend.max_replicas is not None
        and backend.min_replicas > backend.max_replicas
    ):
        errors.append(_error(f"{backend.path}.minReplicas", "minReplicas cannot be greater than maxReplicas"))
    for index, worker in enumerate(backend.workers):
        image = worker.get("image")
        reason = image_error(image) if isinstance(image, str) else None
        if reason:
            errors.append(_error(f"{backend.path}.workers[{index}].image", reason))
    if backend.type == VLLM:
        if len(backend.workers) != 1:
            errors.append(
                _error(
                    f"{backend.path}.workers",
                    f"If backend type is '{VLLM}', there must be exactly one worker",
                )
            )
        elif worker_type(backend.workers[0]) != "server":
            errors.append(
                _error(
                    f"{backend.path}.workers[0].type",
                    f"If backend type is '{VLLM}', the worker type must be 'server'",
                )
            )
    elif backend.type == VLLM_DISAGGREGATED:
        for index, worker in enumerate(backend.workers):
            if worker_type(worker) not in PD_WORKER_TYPES:
                errors.append(
                    _error(
                        f"{backend.path}.workers[{index}].type",
                        f"If backend type is '{VLLM_DISAGGREGATED}', "
                        "all workers must be type 'prefill' or 'decode'",
                    )
                )
    else:
        errors.append(
            _error(
                f"{backend.path}.type",
                f"not support model backend type: {backend.type}; use vLLM or vLLMDisaggregated",
            )
        )
    if backend.type in (VLLM, VLLM_DISAGGREGATED):
        try:
            engine_port(backend.workers)
        except ConfigError as exc:
            errors.append(_error(f"{backend.path}.workers[{max(exc.index, 0)}].config.port", str(exc)))
    errors += pvc_errors(backend)
    try:
        kv_connector_spec(backend.name, backend.workers)
    except KvConnectorError as exc:
        errors.append(_error(f"{backend.path}.workers", f"invalid kv connector configuration: {exc}"))
    return errors
