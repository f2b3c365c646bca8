"""Honest results, fed numbers: when a run is flagged saturated, why, and how the summary
says it (no committee runs here)."""

from __future__ import annotations

from typing import Any

from cluster.results import RunResult, format_report, quorum_possible, saturation

CONFIG = {
    "authorities": 4,
    "workers": 1,
    "faults": 0,
    "transport": "tcp",
    "input_rate": 1000,
    "tx_size": 512,
    "duration": 10.0,
    "batch_size": 500_000,
    "max_batch_delay": 100,
}


def test_a_run_within_its_means_is_not_saturated() -> None:
    assert saturation(missed_bursts=0, delivered=990, offered=1000, machine_share=0.5) == []


def test_each_reason_is_named() -> None:
    late = saturation(missed_bursts=3, delivered=1000, offered=1000, machine_share=0.2)
    assert late == ["clients missed their rate (3 late burst(s))"]
    behind = saturation(missed_bursts=0, delivered=850, offered=1000, machine_share=0.2)
    assert behind and "delivered 850 of 1,000 tx/s" in behind[0] and "0.85 < 0.9" in behind[0]
    busy = saturation(missed_bursts=0, delivered=1000, offered=1000, machine_share=0.9)
    assert busy == ["machine CPU 90% busy over the load"]
    assert len(saturation(missed_bursts=1, delivered=0, offered=1000, machine_share=0.95)) == 3


def test_the_flow_is_not_judged_where_faults_lower_it_by_design() -> None:
    """A partition stops quorum: the workers' backlogs fill and hold their clients back
    (late bursts) and delivery drops; neither is the testbed's doing. CPU still counts."""
    kw = {"missed_bursts": 300, "delivered": 0, "offered": 1000, "judge_flow": False}
    assert saturation(machine_share=0.2, **kw) == []
    assert saturation(machine_share=0.95, **kw) == ["machine CPU 95% busy over the load"]
    assert quorum_possible({"authorities": 4, "faults": 1})
    assert not quorum_possible({"authorities": 4, "faults": 2})


def _result(share: float | None, missed: int = 0, drained: bool = True, **config: Any) -> RunResult:
    """A run whose clients sent 10 s at 250 tx/s each and whose batches all reached quorum."""
    clients = [
        {
            "target": f"w{i}",
            "rate": 250,
            "sent": 2500,
            "missed_bursts": missed,
            "started_at": 100.0,
            "samples": {},
        }
        for i in range(4)
    ]

    def records(i: int) -> list[dict[str, Any]]:
        return [
            {
                "digest": f"d{i}",
                "acked_by": [],
                "quorum_at": 110.0,
                "transactions": 2500,
                "size": 2500 * 512,
                "samples": [],
            }
        ]

    workers = [
        {
            "authority": f"a{i}",
            "worker_id": 0,
            "transactions": f"w{i}",
            "records": records(i),
            "transactions_received": 2500,
            "batches_sealed": {"size": 0, "timeout": 1},
            "batches_quorum": 1,
            "persisted": {"own": 1, "peer": 3},
        }
        for i in range(4)
    ]
    load = {"machine_share": share, "run_cpu_s": 3.0, "run_share": 0.15, "cores": 2}
    return RunResult(
        "local",
        {**CONFIG, **config},
        workers,
        clients,
        {f"a{i}": {"ours": {"0": [f"d{i}"]}, "others": {}} for i in range(4)},
        drained=drained,
        cpu={"load": {**load, "processes": 5}, "run": {**load, "processes": 5}},
    )


def test_the_summary_states_the_cpu_and_no_banner_when_not_saturated() -> None:
    summary = _result(0.4).summary()
    assert summary["saturated"] is False and summary["saturation"] == []
    assert summary["cpu"]["load"]["machine_share"] == 0.4
    assert summary["worker_to_worker_requests"] == 12
    report = format_report(summary)
    assert "CPU over the load: machine 40% of 2 cores" in report and "3.0 CPU-s" in report
    # 3.0 CPU-s (load to drain) over 12 peer batches stored and acked
    assert "Cost: 250.00 CPU-ms per worker-to-worker request (12)" in report
    assert "SATURATED" not in report
    assert "Machine speed after the load: not measured" in report


def test_a_saturated_summary_says_so_first_and_last() -> None:
    summary = _result(0.97, missed=2).summary()
    assert summary["saturated"] is True and len(summary["saturation"]) == 2
    lines = format_report(summary).splitlines()
    for line in (lines[0], lines[-1]):
        assert line.startswith("SATURATED: clients missed their rate")
        assert line.endswith("this figure measures the testbed, not the protocol")


def test_a_run_that_did_not_drain_fails_unless_no_quorum_was_possible() -> None:
    assert _result(0.4).ok
    assert not _result(0.4, drained=False).ok
    # two of four down: nothing can reach quorum, not draining is the expected outcome
    assert _result(0.4, drained=False, faults=2).ok


def test_a_problem_in_the_flow_fails_the_run() -> None:
    result = _result(0.4)
    result.problems.append("drain still running after 25 s")
    assert not result.ok


def test_a_scenario_s_report_and_summary_judge_delivery_alike() -> None:
    """The scenario's report takes its figures before the verdict exists: a run marked
    `faulted` (as the flow does before judging) is not judged on delivery either."""
    result = _result(0.4)
    for w in result.workers[1:]:
        w["records"] = []  # three of four authorities delivered nothing
    assert result.load_figures()["saturated"]
    result.faulted = True
    assert result.load_figures()["saturated"] is False


def test_clients_held_back_by_a_scenario_do_not_make_it_saturated() -> None:
    result = _result(0.2, missed=90)  # a partition: the backlogs held the clients back
    assert result.load_figures()["saturated"]
    result.faulted = True
    assert result.load_figures()["saturation"] == []
    busy = _result(0.95, missed=90)
    busy.faulted = True
    assert busy.load_figures()["saturation"] == ["machine CPU 95% busy over the load"]
