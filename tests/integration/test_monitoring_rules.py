"""The chart's alerting rules pass ``promtool check rules`` and fire as intended (``promtool test rules``);
promtool is built from the Go module proxy (``deploy/local/build-go-tools.sh``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from ferry_local.binaries import go_tools_bin_dir
from ferry_local.chart import chart_dir

pytestmark = [pytest.mark.integration]

RULES = chart_dir() / "files" / "ferry-rules.yaml"
RULE_TESTS = Path(__file__).parent / "ferry-rules.test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(go_tools_bin_dir() / "promtool"), *args], capture_output=True, text=True, timeout=120
    )


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_rule_unit_tests() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(RULES.read_text().replace("> 0.1", "> > 0.1", 1))
    done = promtool("check", "rules", str(broken))
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr
