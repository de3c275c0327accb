"""ExternalModelProvider ``/status`` (spec §1.3): Kthena's ``CredentialsResolved`` and ``Ready``.

``CredentialsResolved``: ``CredentialNotRequired`` without ``auth``; ``CredentialResolved`` when the
labelled Secret holds a non-empty key; else ``CredentialNotFound`` (no such Secret, or it lacks the
credential label: only labelled Secrets reach the bus), ``CredentialKeyNotFound`` or
``CredentialInvalid`` (empty, or not base64 UTF-8). ``Ready``: ``ConfigurationInvalid`` for a spec
the router would refuse, the credential's reason while it is unresolved, ``ProviderUnreachable``
when a TCP connect plus TLS handshake to ``baseURL``'s host and port fails (certificate checks as
the router makes them: skipped only with ``insecureSkipVerify``), else ``Ready``. Reachability is
probed every ``FERRY_STATUS_PROVIDER_PROBE_INTERVAL`` seconds; spec and Secret changes are
re-evaluated at once. Like the Gateway controller, it reads from its own bus-fed view and writes
only what differs (server-side apply of ``/status``), so status replicas need no lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ferry_schemas.bus import ObjectEvent, Resource
from ferry_schemas.models import ExternalModelProvider
from ferry_schemas.models.provider import CREDENTIAL_LABEL, credential_keys
from ferry_schemas.runtime.kubeconn import ApiError
from ferry_schemas.runtime.tasks import cancel_all
from ferry_schemas.runtime.view import ObjectView
from nats.js import JetStreamContext
from pydantic import ValidationError

from ferry_status.conditions import Condition, condition, merge_condition, now_rfc3339, without_times
from ferry_status.kube import StatusApi
from ferry_status.passes import run_passes

log = logging.getLogger(__name__)
JSON = dict[str, Any]
VIEWED = (Resource.EXTERNAL_MODEL_PROVIDERS, Resource.CREDENTIALS)


@dataclass(frozen=True, slots=True)
class Probe:
    ok: bool
    message: str
    at: float


def target(base_url: str) -> tuple[str, int]:
    """(host, port) of an https ``baseURL``; ValueError when it has no host."""
    parts = urlsplit(base_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("baseURL must be an https URL with a host")
    return parts.hostname, parts.port or 443


async def probe(host: str, port: int, *, insecure: bool, limit: float) -> Probe:
    """TCP connect and TLS handshake, nothing sent (no provider call, no credential used)."""
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=context, server_hostname=host), limit
        )
    except TimeoutError:
        return Probe(False, f"no TLS connection to {host}:{port} within {limit:g}s", time.monotonic())
    except (OSError, ssl.SSLError) as exc:
        return Probe(False, f"{host}:{port}: {exc.__class__.__name__}: {exc}", time.monotonic())
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return Probe(True, f"{host}:{port} accepts TLS connections", time.monotonic())


def credentials_condition(spec: Any, namespace: str, secrets: ObjectView) -> Condition:
    auth = spec.auth
    if auth is None:
        return condition(
            "CredentialsResolved", True, "CredentialNotRequired", "the provider needs no credential"
        )
    name, key = auth.secret_ref.name or "", auth.secret_ref.key
    secret = secrets.get(Resource.CREDENTIALS, namespace, name)
    if secret is None:
        return condition(
            "CredentialsResolved", False, "CredentialNotFound",
            f"Secret {namespace}/{name} not found, or it lacks the label {CREDENTIAL_LABEL}=true",
        )  # fmt: skip
    keys = credential_keys(secret)
    if key not in keys:
        return condition(
            "CredentialsResolved", False, "CredentialKeyNotFound", f"Secret {name} has no key {key!r}"
        )
    if not keys[key]:
        return condition(
            "CredentialsResolved", False, "CredentialInvalid",
            f"key {key!r} of Secret {name} is empty or not base64-encoded UTF-8",
        )  # fmt: skip
    return condition("CredentialsResolved", True, "CredentialResolved", f"key {key!r} of Secret {name}")


def provider_status(
    obj: JSON, secrets: ObjectView, probes: dict[tuple[str, int, bool], Probe], at: str
) -> tuple[JSON, tuple[str, int, bool] | None]:
    """The desired status, and the probe target it needs (None when the spec is refused)."""
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "")
    current: list[Condition] = list((obj.get("status") or {}).get("conditions") or [])
    try:
        spec = ExternalModelProvider.model_validate(obj).spec
        host, port = target(spec.base_url)
    except (ValidationError, ValueError) as exc:
        message = str(exc).splitlines()[0] if isinstance(exc, ValueError) else _first_error(exc)
        ready = condition("Ready", False, "ConfigurationInvalid", message)
        return _status(obj, merge_condition(current, ready, at=at)), None
    credential = credentials_condition(spec, namespace, secrets)
    wanted = (host, port, bool(spec.insecure_skip_verify))
    found = probes.get(wanted)
    if credential["status"] != "True":
        ready = condition("Ready", False, credential["reason"], credential["message"])
    elif found is None:
        ready = condition("Ready", False, "Probing", f"checking that {host}:{port} accepts TLS connections")
    elif not found.ok:
        ready = condition("Ready", False, "ProviderUnreachable", found.message)
    else:
        ready = condition("Ready", True, "Ready", found.message)
    conditions = merge_condition(merge_condition(current, credential, at=at), ready, at=at)
    return _status(obj, conditions), wanted


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error.get('msg')}"


def _status(obj: JSON, conditions: list[Condition]) -> JSON:
    generation = (obj.get("metadata") or {}).get("generation")
    status: JSON = {"conditions": conditions}
    if generation is not None:
        status["observedGeneration"] = int(generation)
    return status


class ProviderStatusController:
    """Keeps every ExternalModelProvider's conditions current."""

    def __init__(
        self,
        js: JetStreamContext,
        api: StatusApi,
        *,
        probe_interval: float = 30.0,
        probe_timeout: float = 5.0,
    ) -> None:
        self._api = api
        self.view = ObjectView(js, VIEWED)
        self.view.on_change(lambda change: self._on_change(change.event))
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.probes: dict[tuple[str, int, bool], Probe] = {}
        self.keys: set[tuple[str, str]] = set()
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def synced(self) -> bool:
        return self.view.synced

    def _on_change(self, event: ObjectEvent) -> None:
        if event.resource == Resource.EXTERNAL_MODEL_PROVIDERS:
            key = (event.namespace or "", event.name)
            if event.deleted:
                self.keys.discard(key)
            else:
                self.keys.add(key)
        self._dirty.set()

    async def start(self) -> None:
        await self.view.start()
        self._task = asyncio.create_task(self._loop(), name="provider-status")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_all([self._task])
        await self.view.stop()

    async def _loop(self) -> None:
        await run_passes(
            "provider", self._dirty, lambda: self.view.synced, self.reconcile, resync=self.probe_interval
        )

    async def reconcile(self) -> None:
        at = now_rfc3339()
        objects = [o for ns, name in sorted(self.keys) if (o := self.view.get(VIEWED[0], ns, name))]
        needed = {
            wanted for obj in objects if (wanted := provider_status(obj, self.view, self.probes, at)[1])
        }
        due = [
            w
            for w in needed
            if (p := self.probes.get(w)) is None or time.monotonic() - p.at >= self.probe_interval
        ]
        results = await asyncio.gather(
            *(probe(host, port, insecure=insecure, limit=self.probe_timeout) for host, port, insecure in due)
        )
        self.probes = {w: p for w, p in self.probes.items() if w in needed} | dict(
            zip(due, results, strict=True)
        )
        for obj in objects:
            status, _ = provider_status(obj, self.view, self.probes, at)
            if without_times(obj.get("status") or {}) == without_times(status):
                continue
            meta = obj["metadata"]
            try:
                await self._api.apply_status(VIEWED[0], meta["namespace"], meta["name"], status)
                log.info("status of externalmodelprovider %s/%s written", meta["namespace"], meta["name"])
            except ApiError as exc:
                if exc.status != 404:  # gone meanwhile: its delete event follows
                    raise
