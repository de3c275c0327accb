"""``ferry-applier``: make the cluster match the desired sets (KUBECONFIG or in-cluster config)."""

from __future__ import annotations

from ferry_schemas.runtime.lifecycle import run_main

from ferry_applier.service import amain


def main() -> None:
    run_main(amain())


if __name__ == "__main__":
    main()
