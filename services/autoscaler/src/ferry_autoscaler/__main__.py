"""``ferry-autoscaler``: act on AutoscalingPolicy (and Binding) like Kthena's autoscaler."""

from __future__ import annotations

from ferry_schemas.runtime.lifecycle import run_main

from ferry_autoscaler.service import amain


def main() -> None:
    run_main(amain())


if __name__ == "__main__":
    main()
