"""`narwhal-testbed local` end to end: processes, load, summary, JSON, digest agreement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_local_run_prints_and_writes_the_summary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    cmd = [
        sys.executable, "-m", "cluster.cli", "local",
        "--nodes", "4", "--rate", "2000", "--tx-size", "128", "--duration", "3",
        "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    for key in ("input_rate", "tx_size", "duration", "tps", "bps", "latency_p50_s",
                "latency_p99_s"):  # fmt: skip
        assert key in summary
    assert summary["input_rate"] == 2000 and summary["tx_size"] == 128
    assert summary["batches_quorum"] > 0 and summary["latency_samples"] > 0
    assert summary["transactions_quorum"] == summary["transactions_sent"]
    assert summary["digest_agreement"]["ok"], summary["digest_agreement"]
    assert f"Worker TPS: {round(summary['tps']):,} tx/s" in proc.stdout
    assert "Digest agreement: OK" in proc.stdout


def test_local_run_with_more_than_f_down_reports_nothing(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    cmd = [
        sys.executable, "-m", "cluster.cli", "local",
        "--nodes", "4", "--faults", "2", "--rate", "1000", "--duration", "2",
        "--drain-timeout", "1", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["batches_quorum"] == 0 and summary["tps"] == 0
    assert summary["drained"] is False
