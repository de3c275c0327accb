"""``python -m ferry_schemas.crdgen DIR [--check]``: write the CRDs, or diff them against DIR."""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from .crds import generate


def check(directory: Path, files: dict[str, str]) -> list[str]:
    """Human-readable differences between ``files`` and ``directory`` (empty when identical)."""
    problems: list[str] = []
    for name, content in sorted(files.items()):
        path = directory / name
        current = path.read_text() if path.exists() else ""
        if current != content:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                content.splitlines(keepends=True),
                fromfile=f"{path} (committed)",
                tofile=f"{path} (generated)",
            )
            problems.append("".join(diff) or f"{path}: missing")
    for path in sorted(directory.glob("*.yaml")):
        if path.name not in files:
            problems.append(f"{path}: not generated from the models (stale?)")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ferry_schemas.crdgen", description=__doc__)
    parser.add_argument("directory", type=Path, help="where the CRD files live (deploy/crds)")
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when the files differ")
    args = parser.parse_args(argv)
    files = generate()
    if args.check:
        problems = check(args.directory, files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("CRDs are out of date: run `make crds`", file=sys.stderr)
        return 1 if problems else 0
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (args.directory / name).write_text(content)
        print(f"wrote {args.directory / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
