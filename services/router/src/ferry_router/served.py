"""Which model name to ask the engines for.

A ModelServer's ``spec.model`` is what the router sends upstream. A booster without
``served-model-name`` gets ``spec.model = <booster name>`` while vLLM serves the model under its
path, so every request would get the engine's 404 (Kthena does exactly that). The router already
reads each engine's ``/v1/models``: when no engine serves ``spec.model``, it asks for the base
model the engines do serve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from ferry_router.state.table import Endpoint


def engine_model(wanted: str, endpoints: Iterable[Endpoint]) -> str:
    """``wanted`` when an engine lists it (or none was scraped yet), else the most common base model."""
    bases: Counter[str] = Counter()
    for endpoint in endpoints:
        served = endpoint.metrics.models
        if served is None:
            continue
        if wanted in served:
            return wanted
        bases.update(endpoint.metrics.base_models[:1])
    if not bases:
        return wanted
    return min(bases, key=lambda name: (-bases[name], name))
