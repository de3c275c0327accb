"""Command-line parsing of ``ferry`` (no cluster: the kubeconfig named does not exist)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ferry_cli.app import app
from typer.testing import CliRunner


@pytest.mark.parametrize(
    "args",
    [
        ["-n", "ns", "--kubeconfig", "{absent}", "get", "models"],  # before the command
        ["get", "models", "-n", "ns", "--kubeconfig", "{absent}"],  # after it, as kubectl and the hints
        ["describe", "model", "qwen", "--namespace", "ns", "--kubeconfig", "{absent}"],
        ["create", "model", "-t", "Qwen2.5-0.5B-CPU", "--dry-run", "-n", "ns", "--kubeconfig", "{absent}"],
    ],
)
def test_cluster_options_go_before_or_after_the_command(args: list[str], tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    result = CliRunner().invoke(app, [a.format(absent=absent) for a in args], env={"KUBECONFIG": ""})
    assert result.exit_code == 1, result.output  # parsed (not 2, "No such option"), then refused clearly
    assert f"kubeconfig {absent} does not exist" in result.output
