"""The load client sends exactly its rate, whatever the rate's remainder per burst."""

from __future__ import annotations

import pytest

from cluster.load_client import PRECISION, BurstBuilder, burst_sizes


@pytest.mark.parametrize("rate", [1, 7, 50, 250, 1_001, 20_000])
def test_every_second_sends_exactly_the_rate(rate: int) -> None:
    for second in range(3):
        bursts = range(second * PRECISION, (second + 1) * PRECISION)
        assert sum(burst_sizes(rate, i) for i in bursts) == rate


def test_a_short_burst_keeps_its_sample_first() -> None:
    builder = BurstBuilder(burst=13, tx_size=32)
    payload = builder.build(sample_id=5, count=12)
    assert len(payload) == 12 * (4 + 32)
    assert payload[4] == 0  # the sample's kind byte
    assert all(payload[i * 36 + 4] == 1 for i in range(1, 12))
