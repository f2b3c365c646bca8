"""`narwhal-testbed local` end to end: processes, load, summary, JSON, digest agreement."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def _local(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "cluster.cli", "local", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_local_run_prints_and_writes_the_summary(tmp_path: Path) -> None:
    out, results = tmp_path / "summary.json", tmp_path / "results"
    args = ["--authorities", "4", "--rate", "2000", "--tx-size", "128", "--duration", "3"]
    proc = _local(*args, "--json", str(out), "--results-dir", str(results))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    keys = ("input_rate", "tx_size", "duration", "tps", "bps")
    for key in (*keys, "latency_p50_s", "latency_p99_s"):
        assert key in summary
    assert summary["input_rate"] == 2000 and summary["tx_size"] == 128
    assert summary["backend"] == "local" and summary["authorities"] == 4
    assert summary["batches_quorum"] > 0 and summary["latency_samples"] > 0
    assert summary["transactions_quorum"] == summary["transactions_sent"]
    assert summary["digest_agreement"]["ok"], summary["digest_agreement"]
    assert f"Worker TPS: {round(summary['tps']):,} tx/s" in proc.stdout
    # the security libp2p proposes first is part of what was measured
    assert summary["transport"] == "libp2p" and summary["libp2p_security"] == "tls"
    assert "Transport: libp2p over tls" in proc.stdout
    # the machine's speed of the moment and the work's cost, beside the CPU share
    speed = summary["machine_speed"]["sha512_mb_s"]
    assert speed > 0 and f"SHA-512 {speed:,.0f} MB/s on one core" in proc.stdout
    assert "CPU-ms per worker-to-worker request" in proc.stdout
    assert "Digest agreement: OK" in proc.stdout
    # results/<timestamp>/: the same summary, and the report as printed
    match = re.search(r"^Results: (.+)$", proc.stdout, re.MULTILINE)
    assert match, proc.stdout
    written = Path(match.group(1))
    assert written.parent.parent == results and json.loads(written.read_text()) == summary
    assert "Worker TPS" in (written.parent / "report.txt").read_text()


def test_local_run_with_more_than_f_down_reports_nothing(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    args = ["--nodes", "4", "--faults", "2", "--rate", "1000", "--duration", "2"]
    args += ["--drain-timeout", "1"]
    proc = _local(*args, "--json", str(out), "--results-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["batches_quorum"] == 0 and summary["tps"] == 0
    assert summary["drained"] is False


def test_a_run_leaves_no_stores_or_identity_keys_behind(tmp_path: Path) -> None:
    """libp2p identity keys live at `<store>.libp2p` and go with their stores."""
    scratch, results = tmp_path / "tmp", tmp_path / "results"
    scratch.mkdir()
    args = ["--authorities", "4", "--rate", "1000", "--duration", "2", "--transport", "libp2p"]
    cmd = [sys.executable, "-m", "cluster.cli", "local", *args, "--results-dir", str(results)]
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Digest agreement: OK" in proc.stdout
    assert list(scratch.rglob("*.libp2p")) == []
    assert [p.name for p in scratch.iterdir() if p.name.startswith("narwhal-")] == []
