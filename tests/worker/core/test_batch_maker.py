"""Mirrors the original's `make_batch` and `batch_timeout` tests, plus the edge rules."""

import pytest

from worker.core.batch_maker import BatchMaker, parse_sample
from worker.wire import messages as wire
from worker.wire.transactions import TxRun

TX = bytes([1]) + bytes(range(9))  # 10 bytes


def test_make_batch_seals_on_size_with_crossing_transaction() -> None:
    maker = BatchMaker(batch_size=200, max_batch_delay=1_000_000.0, now=0.0)
    sealed = [b for i in range(40) if (b := maker.add(TX + bytes([i]) * 5, now=0.0))]
    # 15-byte transactions: the 14th crosses 200 bytes and is included.
    assert [len(b.transactions) for b in sealed] == [14, 14]
    assert all(b.reason == "size" and b.size == 14 * 15 for b in sealed)
    flat = [tx for b in sealed for tx in b.transactions]
    assert flat == [TX + bytes([i]) * 5 for i in range(28)]
    assert maker.pending_size == 12 * 15


def test_batch_timeout_seals_small_batch() -> None:
    maker = BatchMaker(batch_size=200, max_batch_delay=0.05, now=0.0)
    assert maker.add(TX, now=0.01) is None
    assert maker.add(TX, now=0.02) is None
    assert maker.on_timer(now=0.049) is None
    batch = maker.on_timer(now=0.05)
    assert batch is not None and batch.reason == "timeout"
    assert batch.transactions == [TX, TX]
    assert batch.opened_at == 0.01


def test_timer_never_seals_an_empty_batch_and_rearms() -> None:
    maker = BatchMaker(batch_size=200, max_batch_delay=0.1, now=0.0)
    assert maker.on_timer(now=0.1) is None
    assert maker.deadline == 0.1 + 0.1


def test_timer_resets_after_a_size_seal() -> None:
    maker = BatchMaker(batch_size=20, max_batch_delay=0.1, now=0.0)
    assert maker.add(TX * 2, now=0.08) is not None
    assert maker.deadline == 0.08 + 0.1
    maker.add(TX, now=0.09)
    assert maker.on_timer(now=0.1) is None  # the old deadline no longer applies
    assert maker.on_timer(now=0.18) is not None


def test_samples_travel_with_their_batch() -> None:
    maker = BatchMaker(batch_size=30, max_batch_delay=1.0, now=0.0)
    sample = bytes([0]) + (7).to_bytes(8, "big") + bytes(6)
    stamped = bytes([0]) + (8).to_bytes(8, "big") + (1_500_000_000).to_bytes(8, "big")
    assert parse_sample(sample) == (7, 0.0)
    assert parse_sample(stamped) == (8, 1.5)
    assert parse_sample(TX) is None
    maker.add(TX, now=0.0)
    batch = maker.add(sample, now=0.0, sample=parse_sample(sample))
    assert batch is None
    batch = maker.add(TX, now=0.0)
    assert batch is not None and batch.samples == [(7, 0.0)]


def _one_by_one(batch_size: int, txs: list[bytes]) -> list[tuple[bytes, int, int]]:
    maker = BatchMaker(batch_size=batch_size, max_batch_delay=1.0, now=0.0)
    out = [b for tx in txs if (b := maker.add(tx, now=0.0))]
    return [(b.data, b.count, b.size) for b in out]


@pytest.mark.parametrize("uniform", [True, False])
@pytest.mark.parametrize("batch_size", [1, 100, 1000, 4096])
def test_runs_seal_exactly_where_single_transactions_do(uniform: bool, batch_size: int) -> None:
    sizes = [300] * 40 if uniform else [1 + (i * 37) % 400 for i in range(40)]
    txs = [bytes([1]) * size for size in sizes]
    run = TxRun(b"".join(wire.batch_items(txs)), len(txs), 300, []) if uniform else TxRun.of(txs)
    maker = BatchMaker(batch_size=batch_size, max_batch_delay=1.0, now=0.0)
    sealed = []
    for part in (run,) if uniform else (TxRun.of(txs[:13]), TxRun.of(txs[13:])):
        sealed += maker.add_run(part, now=0.0)
    assert [(b.data, b.count, b.size) for b in sealed] == _one_by_one(batch_size, txs)
    sealed_txs = [tx for b in sealed for tx in wire.decode(b.data, 1 << 20).transactions]
    assert sealed_txs == txs[: sum(b.count for b in sealed)]  # in order, none lost


def test_samples_of_a_run_go_to_the_batch_that_holds_them() -> None:
    txs = [bytes([1]) * 10] * 6
    run = TxRun(b"".join(wire.batch_items(txs)), 6, 10, [], [(0, (1, 0.0)), (4, (2, 0.0))])
    maker = BatchMaker(batch_size=30, max_batch_delay=1.0, now=0.0)
    first, second = maker.add_run(run, now=0.0)
    assert (first.samples, second.samples) == ([(1, 0.0)], [(2, 0.0)])


def test_an_idle_maker_needs_no_timer_and_keeps_its_tick() -> None:
    maker = BatchMaker(batch_size=200, max_batch_delay=0.1, now=0.0)
    assert maker.wake_at() == float("inf")  # nothing open: no wake-up at all
    assert maker.add(TX, now=0.35) is None  # ticks at 0.1, 0.2, 0.3 passed while idle
    assert maker.wake_at() == maker.deadline == pytest.approx(0.4)
    batch = maker.on_timer(now=0.4)
    assert batch is not None and batch.reason == "timeout"
    assert maker.wake_at() == float("inf")
