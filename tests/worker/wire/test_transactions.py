"""Client frames into batch-ready runs: the same transactions, items and samples as a
loop per transaction, however the bytes are chunked, for every header size."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.wire import messages as wire
from worker.wire.frames import FrameTooLarge, Truncated
from worker.wire.transactions import ClientFrames, TxRun, parse_sample


def frames(transactions: list[bytes]) -> bytes:
    return b"".join(struct.pack(">I", len(tx)) + tx for tx in transactions)


def feed(transactions: list[bytes], cuts: list[int], min_size: int = 1) -> list[TxRun]:
    data = frames(transactions)
    parser, runs, pos = ClientFrames(1 << 20, min_size), [], 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        parser.receive_data(data[pos:cut])
        pos = max(pos, cut)
        runs += parser.runs()
    assert not parser.partial
    return runs


def check(runs: list[TxRun], expected: list[bytes]) -> None:
    got, samples = [], []
    for run in runs:
        txs = run.transactions()
        assert run.count == len(txs) and run.size == sum(map(len, txs))
        assert wire.encode_batch_items([run.items], run.count) == wire.encode_batch(txs)
        for k in range(run.count + 1):
            assert run.offset(k) == len(b"".join(wire.batch_items(txs[:k])))
        samples += [(len(got) + i, s) for i, s in run.samples]
        got += txs
    assert got == expected
    assert samples == [(i, parse_sample(tx)) for i, tx in enumerate(expected) if parse_sample(tx)]


def tx(kind: int, size: int, seed: int) -> bytes:
    body = (seed.to_bytes(8, "big") * (size // 8 + 1))[: size - 1]
    return bytes([kind]) + body


@pytest.mark.parametrize("size", [1, 9, 17, 255, 256, 512, 65535, 65536, 70000])
@pytest.mark.parametrize("cut", [[], [1], [5, 600], [3, 4, 5, 6, 7, 8]])
def test_uniform_runs_of_every_header_size(size: int, cut: list[int]) -> None:
    transactions = [tx(0 if i % 7 == 0 else 1, size, i) for i in range(20)]
    runs = feed(transactions, cut)
    check(runs, transactions)
    if size < 65536 and not cut:
        assert len(runs) == 1 and runs[0].uniform == size  # converted whole


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1]), st.sampled_from([1, 3, 9, 17, 255, 256, 300, 513])),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.integers(0, 1 << 16), max_size=6),
)
def test_mixed_sizes_any_chunking(spec: list[tuple[int, int]], cuts: list[int]) -> None:
    transactions = [tx(kind, size, i) for i, (kind, size) in enumerate(spec)]
    check(feed(transactions, cuts), transactions)


def test_short_transactions_are_dropped_and_counted() -> None:
    transactions = [tx(1, 8, 0)] * 3 + [tx(1, 300, 1)] * 2 + [tx(1, 8, 2)]
    parser = ClientFrames(1 << 20, min_size=9)
    parser.receive_data(frames(transactions))
    runs = parser.runs()
    assert parser.refused == 4
    check(runs, [tx(1, 300, 1)] * 2)


def test_an_oversized_frame_is_refused_from_its_header() -> None:
    parser = ClientFrames(1000)
    parser.receive_data(struct.pack(">I", 1001))
    with pytest.raises(FrameTooLarge):
        parser.runs()


def test_a_hang_up_inside_a_frame_is_a_truncation() -> None:
    parser = ClientFrames(1000)
    parser.end_of_data()
    parser.receive_data(frames([b"\x01abc"])[:-1])
    assert parser.runs() == [] and parser.partial
    with pytest.raises(Truncated):
        parser.end_of_data()
