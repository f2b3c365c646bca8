"""Scenario reports that must not mislead: a saturated run says so first, an aborted run
still leaves its plan and a failing verdict naming why."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from faults.plan import resolve
from faults.report import saturation_banner, write_aborted_report
from faults.scenario import LIBRARY, Scenario

NAMES = ["a" * 44, "b" * 44, "c" * 44, "d" * 44]


def _scenario(name: str = "one-crash") -> Scenario:
    return Scenario.model_validate(yaml.safe_load((LIBRARY / f"{name}.yaml").read_text()))


def test_the_banner_names_every_reason() -> None:
    line = saturation_banner(["clients missed their rate (2 late burst(s))", "machine CPU 95%"])
    assert line.startswith("SATURATED: clients missed their rate (2 late burst(s)); machine CPU")
    assert line.endswith("this figure measures the testbed, not the protocol")


def test_an_aborted_run_writes_its_plan_and_a_failing_verdict(tmp_path: Path) -> None:
    scenario = _scenario()
    steps = resolve(scenario, NAMES)
    extra = {"saturated": True, "saturation": ["machine CPU 97% busy over the load"]}
    ran = [{"planned_at": 1.0, "ran_at": 1.2, "op": "crash", "started": {"3": 1.25}}]
    write_aborted_report(tmp_path, scenario, NAMES, steps, "aborted: drain", ran, extra)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["pass"] is False and verdict["verdict"] == "aborted: drain"
    assert verdict["ran"] == ran and verdict["saturated"] is True and verdict["checks"] == []
    timeline = (tmp_path / "timeline.txt").read_text().splitlines()
    assert timeline[0].startswith("SATURATED: machine CPU 97%")
    assert timeline[1] == "RUN ABORTED: aborted: drain" and len(timeline) == 2 + len(steps) + 3
    assert timeline[-1] == "   1.00s  crash       started 3: 1.25s  (+0.25s)"
    assert json.loads((tmp_path / "plan.json").read_text())["seed"] == scenario.seed
    assert (tmp_path / "scenario.yaml").exists()
