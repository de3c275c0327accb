"""ExternalModelProvider (``networking.serving.volcano.sh/v1alpha1``): a third-party model API.

Shape and rules: ``spec/router.md`` §1.3, §1.4 and §16. A ModelRoute target names it with
``externalModelProviderName``; the router then sends the request to ``baseURL`` with the credential
of ``auth.secretRef`` (a Secret labelled :data:`CREDENTIAL_LABEL` in the provider's namespace).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from .meta import CONDITIONS_LIST, Condition, KubeModel, KubeObject, cel, crd_default, validations
from .route import NETWORKING_GROUP

CREDENTIAL_LABEL = "networking.serving.volcano.sh/external-model-provider-credential"
"""Only Secrets carrying this label with value ``"true"`` are credentials a provider may use."""

RESERVED_HEADERS: tuple[str, ...] = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "trailer",
    "te",
)
"""Static ``headers`` may not set these (credentials and hop-by-hop headers), case-insensitive."""

_RESERVED_LIST = ", ".join(f"'{h}'" for h in RESERVED_HEADERS)


class SecretKeySelector(KubeModel):
    model_config = ConfigDict(json_schema_extra={"x-kubernetes-map-type": "atomic"})

    name: str | None = Field(None, max_length=253, json_schema_extra=crd_default(""))
    """The Secret, in the provider's namespace (required, though Kthena's schema defaults it to "")."""
    key: str = Field(min_length=1, max_length=253)
    """The key of the Secret holding the API key."""
    optional: bool | None = None
    """Must be false or unset: a provider needs its credential."""


class ProviderAuth(KubeModel):
    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.secretRef.optional) || !self.secretRef.optional",
                "secretRef.optional must be false or unset",
            ),
            cel("self.secretRef.name != ''", "secretRef.name is required", field_path=".secretRef.name"),
        )
    )

    scheme: Literal["Bearer", "APIKey"] | None = None
    """``Authorization: Bearer`` or ``x-api-key``; OpenAI defaults to Bearer, Anthropic to APIKey."""
    secret_ref: SecretKeySelector
    """The credential Secret in the same namespace."""


class ExternalModelProviderSpec(KubeModel):
    provider_type: Literal["OpenAI", "Anthropic"] | None = Field(
        None, json_schema_extra=crd_default("OpenAI")
    )
    """The protocol adapter used for this provider."""
    model: str | None = Field(None, max_length=256)
    """The upstream model name; when set it replaces the request's ``model``."""
    base_url: str = Field(
        alias="baseURL",
        min_length=1,
        max_length=2048,
        pattern=r"^https://.+",
        json_schema_extra=validations(
            cel(
                r"self.matches('^https://[^/?#@\\s]+(/[^?#\\s]*)?$')",
                "baseURL: must be https://host[:port][/path] without userinfo, query or fragment",
            )
        ),
    )
    """Provider endpoint root, HTTPS only, without userinfo, query or fragment
    (e.g. ``https://api.deepseek.com``)."""
    insecure_skip_verify: bool | None = Field(None, json_schema_extra=crd_default(False))
    """Skip certificate-chain and hostname checks (it does not enable plain HTTP)."""
    auth: ProviderAuth | None = None
    """Where the API key comes from; absent means the provider needs none."""
    headers: dict[str, str] | None = Field(
        None,
        json_schema_extra=validations(
            cel(
                "self.all(k, k.matches('^[!#$%&*+.^_`|~0-9A-Za-z-]+$'))",
                "headers: every name must be a valid HTTP header name",
            ),
            cel(
                f"self.all(k, !(k.lowerAscii() in [{_RESERVED_LIST}]))",
                "headers: credential and hop-by-hop headers are reserved ("
                + ", ".join(RESERVED_HEADERS)
                + ")",
            ),
            cel(
                "self.all(k, !self[k].contains('\\n') && !self[k].contains('\\r'))",
                "headers: values must not contain CR or LF",
            ),
            maxProperties=32,
            additionalProperties={"type": "string", "maxLength": 1024},
        ),
    )
    """Non-sensitive static headers added to upstream requests."""


class ExternalModelProviderStatus(KubeModel):
    observed_generation: int | None = None
    """``metadata.generation`` the status was computed for."""
    conditions: list[Condition] | None = Field(None, json_schema_extra=CONDITIONS_LIST)
    """``Ready`` and ``CredentialsResolved``."""


class ExternalModelProvider(KubeObject):
    GROUP: ClassVar[str] = NETWORKING_GROUP
    KIND: ClassVar[str] = "ExternalModelProvider"
    PLURAL: ClassVar[str] = "externalmodelproviders"

    spec: ExternalModelProviderSpec
    status: ExternalModelProviderStatus | None = None


def credential_keys(secret: dict[str, Any]) -> dict[str, str | None]:
    """The keys of a credential Secret, decoded and trimmed (``None``: not base64 UTF-8). An
    unlabelled Secret holds nothing usable. One reading for the router and the status service."""
    meta = secret.get("metadata") or {}
    if (meta.get("labels") or {}).get(CREDENTIAL_LABEL) != "true":
        return {}
    keys: dict[str, str | None] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            keys[str(key)] = base64.b64decode(str(value), validate=True).decode().strip()
        except (binascii.Error, UnicodeDecodeError):
            keys[str(key)] = None
    return keys
