"""``ferry-watcher``: list+watch the API server and publish every change on FERRY_OBJECTS."""

from __future__ import annotations

from ferry_schemas.runtime.lifecycle import run_main

from ferry_watcher.service import amain


def main() -> None:
    run_main(amain())


if __name__ == "__main__":
    main()
