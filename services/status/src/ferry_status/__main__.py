"""``ferry-status``: keep ModelServing and ModelBooster ``/status`` in step with the cluster."""

from __future__ import annotations

from ferry_schemas.runtime.lifecycle import run_main

from ferry_status.service import amain


def main() -> None:
    run_main(amain())


if __name__ == "__main__":
    main()
