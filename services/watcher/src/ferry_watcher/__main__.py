"""``ferry-watcher``: list+watch the API server and publish every change on FERRY_OBJECTS."""

from __future__ import annotations

import asyncio

from ferry_watcher.service import amain


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
