"""A worker's process hands the GIL over promptly (worker/gil.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from cluster.committee import make_local_committee
from tests.worker.harness import TEST_PARAMS, Cluster
from worker.gil import SWITCH_INTERVAL, share_gil_promptly


@pytest.fixture
def default_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)  # CPython's default
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def test_lowers_the_default_interval(default_interval: None) -> None:
    assert share_gil_promptly() == pytest.approx(SWITCH_INTERVAL)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)


def test_never_raises_a_lower_interval(default_interval: None) -> None:
    sys.setswitchinterval(SWITCH_INTERVAL / 4)
    assert share_gil_promptly() == pytest.approx(SWITCH_INTERVAL / 4)


def test_a_running_worker_has_set_it(default_interval: None, tmp_path: Path) -> None:
    assert sys.getswitchinterval() > SWITCH_INTERVAL
    committee, keys = make_local_committee(4, 1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            cluster = Cluster(nursery, committee, keys, tmp_path, TEST_PARAMS)
            await cluster.start(0)
            assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL)
            nursery.cancel_scope.cancel()

    trio.run(main)
