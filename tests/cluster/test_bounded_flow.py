"""The flow ends in bounded time whatever the committee does: a backend double whose drain,
load or stop never returns. The run then fails (drained False, `ok` False, the problem
named), its summary and report are still written, and a scenario gets a failing report."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.experiment import ExperimentConfig, run_experiment
from cluster.results import format_report, write_results
from faults.scenario import LIBRARY, Scenario
from metrics.service_discovery import MetricsTarget
from worker.core.faults import FaultSettings

NAMES = ["a", "b", "c", "d"]


class StuckBackend:
    """A backend double: every phase answers at once, except those named in `stuck`,
    which block until the test ends (`release`)."""

    name = "double"

    def __init__(self, *stuck: str, drained: bool = True) -> None:
        self.stuck, self.drained = set(stuck), drained
        self.release = threading.Event()
        self.stopped = False

    def _maybe_block(self, phase: str) -> None:
        if phase in self.stuck:
            self.release.wait()

    def deploy(self, cfg: ExperimentConfig, note: Callable[[str], None]) -> list[str]:
        return NAMES

    def discover(self) -> None:
        pass

    def metrics_targets(self) -> list[MetricsTarget]:
        return []

    def start_load(self, rate: int, tx_size: int, duration: float) -> None:
        self.rate = rate

    def wait_load(self, timeout: float) -> list[dict[str, Any]] | None:
        self._maybe_block("load")
        return [client(t, self.rate) for t in NAMES]

    def progress(self) -> dict[str, int] | None:
        return None

    def drain(self, timeout: float) -> bool:
        self._maybe_block("drain")
        return self.drained

    def collect(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        return [], {}

    def placement(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        return {}, None

    def stop(self) -> None:
        self._maybe_block("stop")
        self.stopped = True

    def crash(self, index: int) -> None: ...

    def restart(self, index: int) -> None: ...

    def set_faults(self, index: int, settings: FaultSettings) -> None: ...

    def impersonate(self, index: int, victim: int) -> None: ...

    def impersonations(self) -> list[dict[str, Any]]:
        return []

    def evidence(self) -> list[dict[str, Any]]:
        return []


def client(target: str, rate: int) -> dict[str, Any]:
    return {
        "target": target,
        "rate": rate,
        "tx_size": 512,
        "sent": 0,
        "missed_bursts": 0,
        "started_at": 0.0,
        "samples": {},
    }


def tight() -> ExperimentConfig:
    """Deadlines of a fraction of a second (the double does no work)."""
    return ExperimentConfig(
        rate=400,
        duration=0.05,
        drain_timeout=0.05,
        load_grace=0.2,
        restore_timeout=0.2,
        drain_grace=0.2,
        collect_timeout=0.2,
        stop_timeout=0.2,
    )


@pytest.fixture
def backends() -> Iterator[list[StuckBackend]]:
    made: list[StuckBackend] = []
    yield made
    for backend in made:  # end the threads the flow left behind
        backend.release.set()


@pytest.mark.parametrize("phase", ["drain", "load"])
def test_a_phase_that_never_returns_fails_the_run_and_the_report_is_written(
    phase: str, backends: list[StuckBackend], tmp_path: Path
) -> None:
    backend = StuckBackend(phase)
    backends.append(backend)
    result = run_experiment(tight(), backend)
    assert not result.drained and not result.ok
    assert any(f"{phase} still running" in p for p in result.problems), result.problems
    assert backend.stopped  # the teardown still ran
    summary = result.summary()
    assert summary["problems"] == result.problems and summary["drained"] is False
    write_results(summary, tmp_path)
    report = (tmp_path / "report.txt").read_text()
    assert f"PROBLEM: {phase} still running" in report and "Drained: NO" in report
    assert json.loads((tmp_path / "summary.json").read_text())["drained"] is False


def test_a_drain_that_times_out_fails_the_run(backends: list[StuckBackend]) -> None:
    backend = StuckBackend(drained=False)
    result = run_experiment(tight(), backend)
    assert result.problems == [] and not result.drained and not result.ok


def test_a_stop_that_never_returns_is_abandoned_and_named(backends: list[StuckBackend]) -> None:
    backend = StuckBackend("stop")
    backends.append(backend)
    result = run_experiment(tight(), backend)
    assert any("stop still running" in p for p in result.problems), result.problems
    assert not result.ok


def test_a_scenario_whose_drain_never_returns_gets_a_failing_report(
    backends: list[StuckBackend], tmp_path: Path
) -> None:
    data = yaml.safe_load((LIBRARY / "baseline.yaml").read_text())
    data["duration"] = 1
    scenario = Scenario.model_validate(data)
    backend = StuckBackend("drain")
    backends.append(backend)
    result = run_experiment(tight(), backend, scenario=scenario, out_dir=tmp_path)
    assert result.scenario is not None and not result.scenario.ok and not result.ok
    assert result.scenario.verdict.startswith("aborted: drain still running")
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["pass"] is False and verdict["drained"] is False
    assert "RUN ABORTED" in (tmp_path / "timeline.txt").read_text()
    assert "PROBLEM: drain still running" in format_report(result.summary())
