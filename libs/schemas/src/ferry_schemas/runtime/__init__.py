"""The plumbing every Ferry service shares: settings, probes and metrics, tracing, NATS.

It lives beside the contracts so that no service copies it (design: no service imports another).
"""

from ferry_schemas.runtime.probes import ProbeServer
from ferry_schemas.runtime.settings import ServiceSettings
from ferry_schemas.runtime.tracing import setup_tracing

__all__ = ["ProbeServer", "ServiceSettings", "setup_tracing"]
