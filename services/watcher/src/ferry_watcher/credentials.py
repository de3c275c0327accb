"""ExternalModelProvider credentials: labelled Secrets, published with their data and nothing else.

The router needs a provider's API key but must hold no Kubernetes token (it faces the internet).
The watcher lists only Secrets that carry the opt-in label
``networking.serving.volcano.sh/external-model-provider-credential: "true"`` (a label selector, so
no other Secret ever leaves the API server) and drops everything but identity, labels, ``type`` and
``data`` — notably ``kubectl.kubernetes.io/last-applied-configuration``, a plaintext copy.
"""

from __future__ import annotations

from ferry_watcher.informer import JSON, Informer

KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp", "labels")


class CredentialInformer(Informer):
    """The informer of labelled credential Secrets."""

    def slim(self, obj: JSON) -> JSON:
        meta = obj.get("metadata") or {}
        kept: JSON = {
            "apiVersion": obj.get("apiVersion", "v1"),
            "kind": obj.get("kind", "Secret"),
            "metadata": {k: meta[k] for k in KEPT_METADATA if k in meta},
        }
        for key in ("type", "data"):
            if key in obj:
                kept[key] = obj[key]
        return kept
