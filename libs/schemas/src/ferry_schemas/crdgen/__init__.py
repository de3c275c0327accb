"""Generates Ferry's CRDs (``deploy/crds/``) from the pydantic models in :mod:`ferry_schemas.models`."""

from __future__ import annotations

from .crds import crd, generate, openapi_schema, render
from .structural import NotStructuralError, to_structural

__all__ = ["NotStructuralError", "crd", "generate", "openapi_schema", "render", "to_structural"]
