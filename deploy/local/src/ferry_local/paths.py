"""Where things are: the repository, the shared docs beside it, the ignored state directory, caches."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def repo_root() -> Path:
    """The repository root (the directory holding ``libs/`` and ``services/``)."""
    if env := os.environ.get("FERRY_REPO"):
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "libs" / "schemas").is_dir() and (parent / "services").is_dir():
            return parent
    raise RuntimeError(f"cannot find the Ferry repository above {here}; set FERRY_REPO")


def shared_dir() -> Path:
    """``../shared`` beside the repository (``FERRY_SHARED`` overrides): specs and Kthena reference data."""
    if env := os.environ.get("FERRY_SHARED"):
        return Path(env).resolve()
    return (repo_root().parent / "shared").resolve()


def state_dir() -> Path:
    """The repository's ignored state directory (``FERRY_STATE`` overrides)."""
    path = Path(os.environ.get("FERRY_STATE") or repo_root() / ".state")
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """The cache outside the repository where built Kubernetes binaries live (``FERRY_CACHE``)."""
    base = os.environ.get("FERRY_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ferry"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
