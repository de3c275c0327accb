"""Kthena's reference manifests of Ferry's kinds (``../shared/reference``), for tests.

Examples, converter inputs (all three Kthena versions) and the YAML blocks of the seed documents.
Nothing here is copied into the repository; the files are read where they are.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

FERRY_KINDS = frozenset(
    {
        "ModelBooster",
        "ModelServing",
        "ModelServer",
        "ModelRoute",
        "AutoscalingPolicy",
        "AutoscalingPolicyBinding",
        "PodGroup",
    }
)
_YAML_BLOCK = re.compile(r"^```ya?ml\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class ReferenceManifest:
    """One object: where it comes from (``source`` is stable, usable as a test id) and its content."""

    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))


def shared_dir() -> Path:
    """``$FERRY_SHARED``, else ``../shared`` beside the repository."""
    if env := os.environ.get("FERRY_SHARED"):
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "libs" / "schemas").is_dir():
            return (parent.parent / "shared").resolve()
    raise RuntimeError("cannot locate the shared docs; set FERRY_SHARED")


def _documents(text: str) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict):
            yield doc


def _ferry_objects(source: str, text: str) -> Iterator[ReferenceManifest]:
    for index, doc in enumerate(_documents(text)):
        if doc.get("kind") in FERRY_KINDS:
            yield ReferenceManifest(f"{source}#{index}", doc)


def head_examples(root: Path | None = None) -> list[ReferenceManifest]:
    """Objects of Ferry's kinds in ``reference/kthena/head/examples/``."""
    base = (root or shared_dir()) / "reference" / "kthena"
    found: list[ReferenceManifest] = []
    for path in sorted((base / "head" / "examples").rglob("*.y*ml")):
        found.extend(_ferry_objects(str(path.relative_to(base)), path.read_text()))
    return found


def converter_inputs(root: Path | None = None) -> list[ReferenceManifest]:
    """Objects of Ferry's kinds among the converter inputs of every Kthena version."""
    base = (root or shared_dir()) / "reference" / "kthena"
    found: list[ReferenceManifest] = []
    for path in sorted(base.glob("*/convert-testdata/input/*.y*ml")):
        found.extend(_ferry_objects(str(path.relative_to(base)), path.read_text()))
    return found


def seed_examples(root: Path | None = None) -> list[ReferenceManifest]:
    """Objects of Ferry's kinds in the ```yaml blocks of ``reference/seeds/*.txt``."""
    base = (root or shared_dir()) / "reference" / "seeds"
    found: list[ReferenceManifest] = []
    for path in sorted(base.glob("*.txt")):
        for block_index, match in enumerate(_YAML_BLOCK.finditer(path.read_text())):
            found.extend(_ferry_objects(f"seeds/{path.name}@{block_index}", match.group(1)))
    return found


def all_inputs(root: Path | None = None) -> list[ReferenceManifest]:
    """Every reference object of Ferry's kinds that is an input (not a golden output)."""
    return head_examples(root) + converter_inputs(root) + seed_examples(root)
