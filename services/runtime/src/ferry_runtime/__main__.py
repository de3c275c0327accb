"""``ferry-runtime [Kthena's runtime flags]``: see :mod:`ferry_runtime.settings`."""

from __future__ import annotations

import sys

from ferry_schemas.runtime.lifecycle import run_main, serve

from ferry_runtime.service import run
from ferry_runtime.settings import parse_settings


def main() -> None:
    try:
        settings = parse_settings(sys.argv[1:])
    except ValueError as exc:
        sys.exit(f"ferry-runtime: {exc}")
    run_main(serve(settings, run))


if __name__ == "__main__":
    main()
