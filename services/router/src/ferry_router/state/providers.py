"""ExternalModelProviders and their credentials as the router uses them (spec §1.3, §16).

Providers and the labelled credential Secrets arrive from the bus like every other object
(``externalmodelproviders`` and ``secrets``, the latter published by the watcher without
annotations); the router never talks to Kubernetes. A provider is compiled once into a
:class:`Provider`; its API key is looked up per request, so a rotated Secret applies at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ferry_schemas.models import ExternalModelProvider
from ferry_schemas.models.provider import credential_keys

from ferry_router.state.resources import _meta, _validated

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Provider:
    key: str  # namespace/name
    provider_type: str  # OpenAI | Anthropic
    base_url: str  # without a trailing slash
    has_path: bool  # baseURL has a path beyond "/"
    model: str | None
    insecure: bool
    auth_scheme: str | None  # Bearer | APIKey; None without auth
    secret: str | None  # namespace/name of the credential Secret
    secret_key: str | None
    headers: tuple[tuple[str, str], ...]


def parse_provider(obj: dict[str, Any]) -> Provider:
    namespace, name, _ = _meta(obj)
    spec = _validated(ExternalModelProvider, obj).spec
    provider_type = spec.provider_type or "OpenAI"
    base_url = spec.base_url.rstrip("/")
    if not base_url.startswith("https://") or len(base_url) <= len("https://"):
        raise ValueError("spec.baseURL: must be an https URL with a host")
    auth = spec.auth
    scheme = secret = secret_key = None
    if auth is not None:
        if not auth.secret_ref.name or not auth.secret_ref.key:
            raise ValueError("spec.auth.secretRef: name and key are required")
        scheme = auth.scheme or ("APIKey" if provider_type == "Anthropic" else "Bearer")
        secret, secret_key = f"{namespace}/{auth.secret_ref.name}", auth.secret_ref.key
    return Provider(
        key=f"{namespace}/{name}",
        provider_type=provider_type,
        base_url=base_url,
        has_path="/" in base_url[len("https://") :],
        model=spec.model or None,
        insecure=bool(spec.insecure_skip_verify),
        auth_scheme=scheme,
        secret=secret,
        secret_key=secret_key,
        headers=tuple(sorted((spec.headers or {}).items())),
    )


def parse_credential(obj: dict[str, Any]) -> dict[str, str]:
    """The usable decoded keys of a labelled Secret (an unlabelled one holds nothing usable)."""
    keys: dict[str, str] = {}
    for key, value in credential_keys(obj).items():
        if value is None:
            meta = obj.get("metadata") or {}
            where = f"{meta.get('namespace')}/{meta.get('name')}"
            log.warning("credential %s: key %s is not base64 UTF-8", where, key)
        else:
            keys[key] = value
    return keys


class ProviderTable:
    """Providers and credentials by ``namespace/name``, mutated only by ``apply_*``."""

    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}
        self.credentials: dict[str, dict[str, str]] = {}
        self.invalid: dict[str, str] = {}

    def apply_provider(self, key: str, obj: dict[str, object] | None) -> None:
        self.providers.pop(key, None)
        self.invalid.pop(key, None)
        if obj is None:
            return
        try:
            self.providers[key] = parse_provider(obj)
        except (ValueError, KeyError, TypeError) as exc:
            self.invalid[key] = str(exc)
            log.warning("ExternalModelProvider %s refused: %s", key, exc)

    def apply_credential(self, key: str, obj: dict[str, object] | None) -> None:
        if obj is None:
            self.credentials.pop(key, None)
        else:
            self.credentials[key] = parse_credential(obj)

    def api_key(self, provider: Provider) -> str | None:
        """The provider's API key; ``""`` when it needs none; ``None`` when it is not resolved."""
        if provider.secret is None or provider.secret_key is None:
            return ""
        value = self.credentials.get(provider.secret, {}).get(provider.secret_key)
        return value or None

    def ready(self, namespace: str, name: str) -> bool:
        provider = self.providers.get(f"{namespace}/{name}")
        return provider is not None and self.api_key(provider) is not None
