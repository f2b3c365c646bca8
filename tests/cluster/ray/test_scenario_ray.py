"""A shipped scenario end to end on an embedded Ray: the negative control, where f+1
forgers and a crashed honest peer break storage at f+1 — the checker must say so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.backends.ray import RayBackend
from cluster.experiment import ExperimentConfig, run_experiment
from faults.scenario import LIBRARY, load_scenario

pytestmark = pytest.mark.slow


def test_negative_control_finds_the_violation(tmp_path: Path) -> None:
    scenario = load_scenario(LIBRARY / "forged-ack-beyond-f.yaml").model_copy(
        update={"duration": 6.0}
    )
    cfg = ExperimentConfig.for_scenario(scenario)
    result = run_experiment(cfg, RayBackend(num_cpus=2), scenario=scenario, out_dir=tmp_path)
    outcome = result.scenario
    assert outcome is not None
    checks = {c["name"]: c for c in outcome.checks}
    assert not checks["stored_at_f_plus_1_honest"]["ok"]
    assert checks["quorum_acks"]["ok"] and checks["stored_content_matches_digest"]["ok"]
    assert outcome.ok, outcome.verdict  # the expected violation is this run's pass
    report = outcome.out_dir
    for name in ("scenario.yaml", "plan.json", "timeline.txt", "series.csv", "verdict.json"):
        assert (report / name).stat().st_size > 0
    for name in ("throughput.png", "latency.png"):
        assert (report / name).stat().st_size > 0
    plan = json.loads((report / "plan.json").read_text())
    assert [s["op"] for s in plan["steps"]] == ["faults", "crash"]
    assert plan["steps"][0]["targets"] == [1, 2] and plan["seed"] == 9
    verdict = json.loads((report / "verdict.json").read_text())
    assert verdict["pass"] and verdict["byzantine"] == sorted(
        plan["authorities"][str(i)] for i in (1, 2)
    )
    assert result.summary()["backend"] == "ray"
