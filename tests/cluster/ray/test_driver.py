"""`narwhal-testbed run` end to end on an embedded Ray: the printed summary is the JSON's,
and `local` writes the same keys."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from worker.keys import short_name

pytestmark = pytest.mark.slow


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240, command="run"):
    cmd = [sys.executable, "-m", "cluster.cli", command, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _field(stdout: str, label: str) -> str:
    match = re.search(rf"^ {re.escape(label)}: (.+)$", stdout, re.MULTILINE)
    assert match, f"{label!r} not printed"
    return match.group(1)


def _int(text: str) -> int:
    return int(re.sub(r"[^\d]", "", text.split()[0]))


def test_run_prints_the_summary_it_writes(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    results = tmp_path / "results"
    load = ["--rate", "2000", "--tx-size", "128", "--duration", "3", "--batch-size", "50000"]
    proc = _cli(*load, "--json", str(out), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())

    match = re.search(r"^Results: (.+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    printed_path = Path(match.group(1))
    assert printed_path.parent.parent == results and printed_path.name == "summary.json"
    assert json.loads(printed_path.read_text()) == summary

    # `local`'s keys, with the per-authority figures.
    keys = "input_rate tx_size duration tps bps latency_p50_s latency_p99_s batches_quorum "
    keys += "missed_bursts drained digest_agreement per_worker per_authority"
    for key in keys.split():
        assert key in summary, key
    assert summary["input_rate"] == 2000 and summary["authorities"] == 4
    assert summary["backend"] == "ray"
    assert summary["transactions_quorum"] == summary["transactions_sent"] > 0

    # What is printed is what was written.
    s = proc.stdout
    assert _int(_field(s, "Worker TPS")) == round(summary["tps"])
    assert _int(_field(s, "Worker BPS")) == round(summary["bps"])
    assert _int(_field(s, "Quorum latency p50")) == round(summary["latency_p50_s"] * 1000)
    assert _int(_field(s, "Quorum latency p99")) == round(summary["latency_p99_s"] * 1000)
    assert _int(_field(s, "Batches reaching quorum")) == summary["batches_quorum"]
    assert _int(_field(s, "Clients missed their target rate")) == summary["missed_bursts"]
    for fig in summary["per_authority"]:
        line = re.search(rf"^ {re.escape(short_name(fig['authority']))} on .*: (.+)$", s, re.M)
        assert line, f"no per-authority line for {fig['authority']}"
        sealed, acked, stored = (_int(x) for x in line.group(1).split(" / "))
        assert (sealed, acked, stored) == (
            fig["batches_sealed"],
            fig["batches_acked"],
            fig["batches_stored"],
        )
        assert acked > 0
    assert f"Digest agreement: OK ({summary['batches_quorum']} batches checked)" in s

    # `local --json` writes the same keys, down to the per-worker and per-authority entries.
    local_out = tmp_path / "local.json"
    local = _cli(*load, "--json", str(local_out), "--results-dir", str(results), command="local")
    assert local.returncode == 0, local.stderr[-3000:]
    other = json.loads(local_out.read_text())
    assert set(other) == set(summary)
    for section in ("per_worker", "per_authority"):
        assert {k for e in other[section] for k in e} == {k for e in summary[section] for k in e}


def test_joining_an_absent_cluster_fails_clearly() -> None:
    proc = _cli("--address", "127.0.0.1:1", "--duration", "1", timeout=60)
    assert proc.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in proc.stderr


def test_auto_without_a_cluster_fails_clearly() -> None:
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # where 'auto' looks first
    proc = _cli("--address", "auto", "--duration", "1", env=env, timeout=60)
    assert proc.returncode == 2
    assert "no Ray cluster answers at" in proc.stderr
