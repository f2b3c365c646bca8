"""`narwhal-testbed run` end to end on an embedded Ray: the printed summary is the JSON's."""

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


def _cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240):
    cmd = [sys.executable, "-m", "cluster.cli", "run", *args]
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
    proc = _cli(
        "--rate", "2000", "--tx-size", "128", "--duration", "3", "--batch-size", "50000",
        "--json", str(out), "--results-dir", str(results),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(out.read_text())

    match = re.search(r"^Results: (.+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    printed_path = Path(match.group(1))
    assert printed_path.parent.parent == results and printed_path.name == "summary.json"
    assert json.loads(printed_path.read_text()) == summary

    # `local`'s keys, plus the per-node figures.
    for key in ("input_rate", "tx_size", "duration", "tps", "bps", "latency_p50_s",
                "latency_p99_s", "batches_quorum", "missed_bursts", "drained",
                "digest_agreement", "per_worker", "per_node"):  # fmt: skip
        assert key in summary, key
    assert summary["input_rate"] == 2000 and summary["nodes"] == 4
    assert summary["transactions_quorum"] == summary["transactions_sent"] > 0

    # What is printed is what was written.
    s = proc.stdout
    assert _int(_field(s, "Worker TPS")) == round(summary["tps"])
    assert _int(_field(s, "Worker BPS")) == round(summary["bps"])
    assert _int(_field(s, "Quorum latency p50")) == round(summary["latency_p50_s"] * 1000)
    assert _int(_field(s, "Quorum latency p99")) == round(summary["latency_p99_s"] * 1000)
    assert _int(_field(s, "Batches reaching quorum")) == summary["batches_quorum"]
    assert _int(_field(s, "Clients missed their target rate")) == summary["missed_bursts"]
    for fig in summary["per_node"]:
        line = re.search(rf"^ {re.escape(short_name(fig['authority']))} on .*: (.+)$", s, re.M)
        assert line, f"no per-node line for {fig['authority']}"
        sealed, acked, stored = (_int(x) for x in line.group(1).split(" / "))
        assert (sealed, acked, stored) == (
            fig["batches_sealed"],
            fig["batches_acked"],
            fig["batches_stored"],
        )
        assert acked > 0
    assert f"Digest agreement: OK ({summary['batches_quorum']} batches checked)" in s


def test_joining_an_absent_cluster_fails_clearly() -> None:
    proc = _cli("--address", "127.0.0.1:1", "--duration", "1", timeout=60)
    assert proc.returncode == 2
    assert "no Ray cluster answers at 127.0.0.1:1" in proc.stderr


def test_auto_without_a_cluster_fails_clearly() -> None:
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1"}  # where 'auto' looks first
    proc = _cli("--address", "auto", "--duration", "1", env=env, timeout=60)
    assert proc.returncode == 2
    assert "no Ray cluster answers at" in proc.stderr
