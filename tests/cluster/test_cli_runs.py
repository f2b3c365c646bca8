"""`local` / `run` with --scenario: the options a scenario sets are refused by name, bad
scenario files and unknown names fail in one line with exit code 2; `scenarios` lists
the shipped library."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cluster.cli import app
from cluster.cli.common import parameters
from cluster.experiment import HARNESS_PARAMETERS
from faults.scenario import LIBRARY
from worker.config import Parameters

runner = CliRunner()


@pytest.mark.parametrize("command", ["local", "run"])
def test_options_a_scenario_sets_are_refused_by_name(command: str, tmp_path: Path) -> None:
    args = [command, "--scenario", "baseline", "--rate", "9", "--nodes", "7"]
    result = runner.invoke(app, [*args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "--nodes, --rate" in result.output and "scenario sets" in result.output
    assert not any(tmp_path.iterdir())  # nothing ran, nothing written


def test_an_unknown_scenario_fails_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["local", "--scenario", "no-such", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "no scenario no-such" in result.output and "Traceback" not in result.output


def test_an_invalid_scenario_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncolour: red\n")
    result = runner.invoke(app, ["local", "--scenario", str(bad), "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "colour: unknown key" in result.output


def test_bad_parameters_fail_clearly(tmp_path: Path) -> None:
    result = runner.invoke(app, ["local", "--transport", "pigeon", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2 and "invalid parameters" in result.output


def test_scenarios_lists_the_shipped_library() -> None:
    result = runner.invoke(app, ["scenarios"])
    assert result.exit_code == 0
    for path in LIBRARY.glob("*.yaml"):
        assert path.stem in result.output


def test_benchmark_defaults_yield_to_the_file_and_the_options(tmp_path: Path) -> None:
    assert Parameters().max_batch_delay == 100  # the node's own default stays the original's
    assert parameters(None, HARNESS_PARAMETERS).max_batch_delay == 200  # the harness's
    file = tmp_path / "p.json"
    file.write_text('{"max_batch_delay": 150, "batch_size": 100000}')
    assert parameters(file, HARNESS_PARAMETERS).max_batch_delay == 150
    assert parameters(file, HARNESS_PARAMETERS).batch_size == 100_000
    other = tmp_path / "q.json"
    other.write_text('{"sync_writes": false}')
    assert parameters(other, HARNESS_PARAMETERS).max_batch_delay == 200
    assert parameters(file, HARNESS_PARAMETERS, max_batch_delay=30).max_batch_delay == 30
    assert parameters(file).max_batch_delay == 150  # `authority` and `committee`: no harness
