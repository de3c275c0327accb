"""Contracts around autoscaling that several services keep: who owns ``spec.replicas``, and demand.

* **Replica ownership.** A ModelServing governed by an AutoscalingPolicy(+Binding) of its desired set
  has its ``spec.replicas`` owned by field manager :data:`REPLICAS_MANAGER` (server-side apply field
  ownership, as HPA does with Deployments): the applier hands the field over once and then applies
  the ModelServing without it, the autoscaler writes it through the ``scale`` subresource.
* **Demand.** A router that holds a request for a model with no ready endpoint publishes a
  :class:`Demand` on ``ferry.demand.<ns>.<server>`` (core NATS, no stream: demand is only
  meaningful now); the autoscaler scales a target at zero to one at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from ferry_schemas.bus import Envelope, encode_token

REPLICAS_MANAGER = "ferry-autoscaler"
"""Field manager that owns ``spec.replicas`` (and role replicas) of autoscaled ModelServings."""

DEMAND_PREFIX = "ferry.demand"

_HOMOGENEOUS_KEYS = ("homogeneousTarget", "scalingConfiguration")
_HETEROGENEOUS_KEYS = ("heterogeneousTarget", "optimizerConfiguration")
_POLICY_KINDS = ("AutoscalingPolicy", "AutoscalingPolicyBinding")


def _target_name(target: Mapping[str, Any] | None) -> str | None:
    ref = (target or {}).get("targetRef") or {}
    if (target or {}).get("subTargets"):
        return None  # a role target: spec.replicas stays with its owner
    if ref.get("kind") not in (None, "", "ModelServing") or not ref.get("name"):
        return None
    return str(ref["name"])


def scaled_servings(spec: Mapping[str, Any]) -> set[str]:
    """Names of the ModelServings whose ``spec.replicas`` a policy or binding spec scales."""
    names: set[str] = set()
    for key in _HOMOGENEOUS_KEYS:
        name = _target_name((spec.get(key) or {}).get("target"))
        if name:
            names.add(name)
    for key in _HETEROGENEOUS_KEYS:
        for param in (spec.get(key) or {}).get("params") or ():
            name = _target_name(param.get("target"))
            if name:
                names.add(name)
    return names


def autoscaled_in(children: Iterable[Mapping[str, Any]]) -> set[str]:
    """ModelServings of a desired set whose replicas belong to the autoscaler."""
    names: set[str] = set()
    for child in children:
        if child.get("kind") in _POLICY_KINDS:
            names |= scaled_servings(child.get("spec") or {})
    return names


def demand_subject(namespace: str, server: str) -> str:
    return f"{DEMAND_PREFIX}.{encode_token(namespace)}.{encode_token(server)}"


class Demand(Envelope):
    """A request is waiting for a model server that has no ready endpoint."""

    namespace: str
    server: str
    """The ModelServer's name."""
    model: str
    selector: dict[str, str] = Field(default_factory=dict)
    """The ModelServer's ``workloadSelector.matchLabels``: the pods that would serve the request."""
    waiting: int = 1
    """Requests held for this server by the publishing router right now."""
