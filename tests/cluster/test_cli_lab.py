"""The lab's commands mounted under the main CLI, and `--lab` handing its state dir on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.backends.lab_network import LAB_ENV
from cluster.cli import app

runner = CliRunner()


def test_lab_up_status_down_are_commands_of_the_main_cli() -> None:
    result = runner.invoke(app, ["lab", "--help"])
    assert result.exit_code == 0
    for command in ("up", "status", "down"):
        assert command in result.output
    assert runner.invoke(app, ["lab", "status", "--help"]).exit_code == 0


def test_lab_sets_the_state_dir_for_the_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LAB_ENV, raising=False)
    state = tmp_path / "lab"
    args = ["local", "--lab", str(state), "--transport", "pigeon", "--results-dir", str(tmp_path)]
    result = runner.invoke(app, args)  # refused at the parameters, after the option is read
    assert result.exit_code == 2
    assert os.environ[LAB_ENV] == str(state.resolve())
    assert "network: kernel" in runner.invoke(app, ["run", "--help"]).output
