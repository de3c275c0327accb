"""``ferry-status``: keep ModelServing and ModelBooster ``/status`` in step with the cluster."""

from __future__ import annotations

import asyncio

from ferry_status.service import amain


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
