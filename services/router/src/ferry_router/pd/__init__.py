"""Prefill/decode disaggregation connectors (spec §13)."""

from ferry_router.pd.base import Connector, PDCall, connector_for, run_pairs

__all__ = ["Connector", "PDCall", "connector_for", "run_pairs"]
