"""``ferry-autoscaler``: act on AutoscalingPolicy (and Binding) like Kthena's autoscaler."""

from __future__ import annotations

import asyncio

from ferry_autoscaler.service import amain


def main() -> None:
    asyncio.run(amain())


if __name__ == "__main__":
    main()
