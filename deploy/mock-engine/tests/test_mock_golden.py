"""The mock engine stands in for every engine container in Kthena's converter golden files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from ferry_mock_engine import Connector, Role, config_from_argv, engine_argv

REPO = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("FERRY_SHARED", REPO.parent / "shared"))
GOLDEN = sorted(SHARED.glob("reference/kthena/*/convert-testdata/expected/*model-serving*.yaml"))
PD_ROLES = {"prefill": Role.PREFILL, "decode": Role.DECODE}


def test_golden_files_are_there() -> None:
    assert len(GOLDEN) >= 8, f"Kthena golden ModelServing files not found under {SHARED}"


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: "/".join(p.parts[-4:]))
def test_each_role_has_one_engine_the_mock_can_run(path: Path) -> None:
    servings = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "ModelServing"]
    assert servings
    for serving in servings:
        for role in serving["spec"]["template"]["roles"]:
            containers = role["entryTemplate"]["spec"]["containers"]
            engines = [
                argv for c in containers if (argv := engine_argv(c, {"POD_NAME": "p", "NAMESPACE": "n"}))
            ]
            assert len(engines) == 1, f"{role['name']}: {len(engines)} engine containers"
            cfg = config_from_argv(engines[0], env={})
            assert cfg.names[0] in engines[0]  # the served name came from the pod's own flags
            if role["name"] in PD_ROLES:
                assert cfg.role is PD_ROLES[role["name"]]
                assert cfg.connector in {
                    Connector.MOONCAKE,
                    Connector.HTTP,
                    Connector.NIXL,
                    Connector.LMCACHE,
                }
            else:
                assert cfg.role is Role.AGGREGATED
            # the Kthena runtime sidecar (`--engine vllmdisaggregated`) is not an engine
            runtime = [c for c in containers if c.get("name") == "runtime"]
            assert all(engine_argv(c) is None for c in runtime)
