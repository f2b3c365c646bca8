"""`narwhal-testbed bench`: the JSON's shape from a --quick run (not its figures), and the
printed report from fed figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.bench.run import knee_ratios, searches_at_cap
from cluster.cli.bench import format_bench


@pytest.mark.slow
def test_quick_bench_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--transports", "tcp", "--cost-authorities", "4", "--searches", "2"]
    cmd = [sys.executable, "-m", "cluster.cli", *args, "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: a target missed
    bench = json.loads(out.read_text())
    assert set(bench) == {
        "settings",
        "ceiling",
        "knees",
        "ratio",
        "ratios",
        "searches_at_cap",
        "aead_only_ratio",
        "cost",
        "cost_growth",
        "targets",
        "ok",
    }
    assert bench["ceiling"]["hash_mb_s"] > 0 and bench["ceiling"]["store_puts_s"] > 0
    tcp = bench["knees"]["tcp"]
    assert tcp["steps"] and {"rate", "ok", "tps", "machine_share"} <= set(tcp["steps"][0])
    assert len(tcp["knees"]) == 2 and tcp["knee_tx_s"] in tcp["knees"]
    assert {step["search"] for step in tcp["steps"]} == {1, 2}
    assert set(tcp["against_ceiling"]) == {"kinds", "ceiling_tx_s", "knee_fraction"}
    assert [p["authorities"] for p in bench["cost"]["tcp"]] == [4]
    assert {"cpu_s_per_mb", "cpu_ms_per_request"} <= set(bench["cost"]["tcp"][0])
    assert bench["ratio"] is None and bench["ratios"] == []  # one transport: no ratio
    assert bench["searches_at_cap"] == 0 and "left out" not in proc.stdout
    assert bench["aead_only_ratio"] is None
    assert (proc.returncode == 0) == bench["ok"]
    assert "Knee tcp:" in proc.stdout and "Ceiling of this machine" in proc.stdout


def vs(ceiling_tx_s: int, fraction: float) -> dict[str, Any]:
    kinds = {"hash": {"passes": 4, "implied_mb_s": 8.0, "ceiling_mb_s": 400.0, "fraction": 0.02}}
    return {"kinds": kinds, "ceiling_tx_s": ceiling_tx_s, "knee_fraction": fraction}


def fed() -> dict[str, Any]:
    knee = {"knee_tx_s": 4_000, "capped": False, "steps": []}
    return {
        "settings": {"authorities": 4, "tx_size": 512},
        "ceiling": {
            "cores": 2,
            "batch_size": 500_000,
            "hash_mb_s": 400.0,
            "store_mb_s": 100.0,
            "store_puts_s": 200.0,
            "loopback_mb_s": 900.0,
            "aead_mb_s": 1000.0,
        },
        "knees": {
            "tcp": {**knee, "knee_tx_s": 8_000, "against_ceiling": vs(80_000, 0.1)},
            "libp2p": {**knee, "against_ceiling": vs(70_000, 0.057)},
        },
        "ratio": 0.5,
        "cost": {"tcp": []},
        "targets": [
            {"name": "libp2p knee / TCP knee", "value": 0.5, "target": 0.9, "ok": False},
            {"name": "x", "value": None, "target": 1.5, "ok": None},
        ],
    }


def test_the_report_names_each_knee_the_ratio_the_ceiling_and_missed_targets() -> None:
    text = format_bench(fed())
    assert "Knee tcp: 8,000 tx/s" in text and "Knee libp2p: 4,000 tx/s" in text
    assert "libp2p knee / TCP knee: 0.50" in text
    assert "5.7% of the ceiling (70,000 tx/s)" in text
    assert "Target libp2p knee / TCP knee: 0.500 (target 0.9) MISSED" in text
    assert "not measured" in text


def test_several_searches_show_each_knee_and_ratio_beside_the_median() -> None:
    bench = fed()
    bench["knees"]["tcp"]["knees"] = [8_000, 9_000, 7_000]
    bench["ratios"] = [0.5, 0.44, 0.57]
    text = format_bench(bench)
    assert "Knee tcp: 8,000 tx/s (median of 8,000, 9,000, 7,000)" in text
    assert "libp2p knee / TCP knee: 0.50 (median of 0.50, 0.44, 0.57)" in text


def test_each_search_pairs_its_own_knees() -> None:
    found = {"tcp": {"knees": [200, 100, 0]}, "libp2p": {"knees": [180, 100, 50]}}
    assert knee_ratios(found) == [0.9, 1.0]  # a search whose TCP knee is 0 has no ratio
    assert knee_ratios({"tcp": {"knees": [200]}}) == []


def test_a_search_that_reached_the_cap_has_no_ratio_and_says_so() -> None:
    found = {
        "tcp": {"knees": [256, 200, 210], "at_cap": [True, False, False]},
        "libp2p": {"knees": [200, 180, 210], "at_cap": [False, False, True]},
    }
    assert knee_ratios(found) == [0.9]  # the cap is no knee: those ratios would be bounds
    assert searches_at_cap(found) == 2
    bench = fed() | {"searches_at_cap": 2}
    bench["settings"]["max_rate"] = 256_000
    assert "2 search(es) left out, a knee there was the cap (256,000 tx/s)" in format_bench(bench)


def test_the_aead_only_bound_is_printed_under_the_ratio() -> None:
    bench = fed() | {"aead_only_ratio": 0.9}
    text = format_bench(bench)
    assert "libp2p knee / TCP knee: 0.50\n  if ChaCha20-Poly1305 were libp2p's only" in text
    assert text.split("\n  if ChaCha20-Poly1305")[1].split("\n")[0].endswith(": 0.90")
