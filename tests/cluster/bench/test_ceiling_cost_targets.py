"""The ceiling comparison, the cost figure and the targets, on fed numbers; the ceiling's
own measurements only for their shape (tiny durations)."""

from __future__ import annotations

from typing import Any

import pytest

from cluster.bench.ceiling import (
    aead_only_ratio,
    against_ceiling,
    machine_speed,
    measure_ceiling,
    passes,
)
from cluster.bench.cost import cost_figures, cost_growth
from cluster.bench.targets import Targets, judge_targets

CEILING = {
    "cores": 2,
    "hash_mb_s": 400.0,
    "store_mb_s": 100.0,
    "loopback_mb_s": 1000.0,
    "aead_mb_s": 1000.0,
}


def test_the_committee_passes_over_each_byte_n_times_and_libp2p_encrypts_each_copy() -> None:
    assert passes(4, "tcp") == {"hash": 4, "store": 4, "loopback": 3}
    assert passes(7, "libp2p") == {"hash": 7, "store": 7, "loopback": 6, "aead": 12}


def test_the_knee_is_set_against_each_ceiling_and_the_ceiling_in_tx_s() -> None:
    vs = against_ceiling(10_000, 500, 4, "tcp", CEILING)  # 5 MB/s of payload
    assert vs["kinds"]["hash"] == {
        "passes": 4,
        "implied_mb_s": 20.0,
        "ceiling_mb_s": 400.0,
        "fraction": 0.05,
    }
    assert vs["kinds"]["store"]["fraction"] == 0.2
    assert vs["kinds"]["loopback"]["implied_mb_s"] == 15.0
    # core-seconds per tx: 500 B x (4/400 + 4/100 + 3/1000) / 1e6 = 2.65e-5; 2 cores
    assert vs["ceiling_tx_s"] == round(2 / 2.65e-5)
    assert vs["knee_fraction"] == pytest.approx(10_000 / (2 / 2.65e-5), abs=1e-4)
    assert "aead" in against_ceiling(10_000, 500, 4, "libp2p", CEILING)["kinds"]


@pytest.mark.parametrize(
    ("security", "aead"), [("tls", "AES-128-GCM"), ("noise", "ChaCha20-Poly1305")]
)
def test_the_ceiling_measures_every_kind(security: str, aead: str) -> None:
    c = measure_ceiling(64_000, 0.01, security)
    for key in ("hash_mb_s", "store_mb_s", "store_puts_s", "loopback_mb_s", "aead_mb_s"):
        assert c[key] > 0
    assert c["batch_size"] == 64_000 and c["cores"] >= 1
    assert c["aead"] == aead  # the AEAD of the security the knees are measured with


def test_the_machine_speed_reading_hashes_for_its_time() -> None:
    speed = machine_speed(0.02)
    assert speed["sha512_mb_s"] > 0 and speed["seconds"] == 0.02


def _summary(n: int, cpu_s: float | None, requests: int) -> dict[str, Any]:
    return {
        "authorities": n,
        "input_rate": 100 * n,
        "bytes_quorum": 2_000_000,
        "worker_to_worker_requests": requests,
        "cpu": {"run": {"run_cpu_s": cpu_s}, "load": {"machine_share": 0.3}},
        "saturated": False,
    }


def test_cost_per_mb_and_per_request_and_its_growth_with_n() -> None:
    small = cost_figures(_summary(4, 4.0, 1_000))
    assert small["cpu_s_per_mb"] == 2.0 and small["cpu_ms_per_request"] == 4.0
    large = cost_figures(_summary(10, 30.0, 5_000))
    assert cost_growth([large, small]) == 1.5
    unmeasured = cost_figures(_summary(7, None, 0))
    assert unmeasured["cpu_s_per_mb"] is None and unmeasured["cpu_ms_per_request"] is None
    assert cost_growth([small, unmeasured]) is None


def _bench(ratio: float | None, fraction: float, growth: float | None) -> dict[str, Any]:
    knee = {"against_ceiling": {"knee_fraction": fraction}}
    return {"knees": {"libp2p": knee}, "ratio": ratio, "cost_growth": {"tcp": growth}}


def test_targets_are_met_missed_or_not_measured() -> None:
    rows = judge_targets(_bench(0.95, 0.6, 1.2), Targets())
    assert [r["ok"] for r in rows] == [True, True, True]
    rows = judge_targets(_bench(0.3, 0.05, 2.0), Targets())
    assert [r["ok"] for r in rows] == [False, False, False]
    rows = judge_targets(_bench(None, 0.6, None), Targets())
    assert [r["ok"] for r in rows] == [None, True, None]
    assert judge_targets({"knees": {}, "ratio": None}, Targets())[1]["value"] is None


def test_the_aead_only_bound_charges_the_aead_on_top_of_tcps_share() -> None:
    ceiling = {"aead_mb_s": 1000.0, "cores": 2}
    # TCP's knee 100,000 tx/s of 500 B at N = 4: 6 AEAD passes, 300 MB/s, 0.15 of 2 cores
    assert aead_only_ratio(100_000, 0.85, 500, 4, ceiling) == 0.85
    assert aead_only_ratio(100_000, 0.85, 500, 4, ceiling | {"aead_mb_s": 3000.0}) == 0.944
    assert aead_only_ratio(100_000, None, 500, 4, ceiling) is None  # no CPU reading
    assert aead_only_ratio(0, 0.85, 500, 4, ceiling) is None
