"""``ferry-applier``: make the cluster match the desired sets (KUBECONFIG or in-cluster config)."""

from __future__ import annotations

import asyncio

from ferry_applier.service import amain


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
