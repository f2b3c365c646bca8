"""`is_uniform_batch`: the check without decoding never vouches for bytes `decode` refuses,
and vouches for the batches a benchmark sends (one transaction size)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.wire import messages as wire

LIMITS = (1 << 20, 4096, 5_000, 1)  # max message, max transaction, max transactions, min


def _decodes_to_a_batch(data: bytes, limits: tuple[int, int, int, int]) -> bool:
    try:
        return isinstance(wire.decode(data, *limits), wire.Batch)
    except wire.WireError:
        return False


@pytest.mark.parametrize(("count", "size"), [(1, 1), (15, 255), (16, 256), (976, 512), (3, 4096)])
def test_uniform_batches_are_vouched_for(count: int, size: int) -> None:
    data = wire.encode_batch([bytes([i % 251]) * size for i in range(count)])
    assert wire.is_uniform_batch(data, *LIMITS)
    assert _decodes_to_a_batch(data, LIMITS)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (wire.encode_batch([b"ab", b"abc"]), "two sizes: decode decides"),
        (wire.encode_batch([b"x" * 4097]), "over the transaction limit"),
        (wire.encode_batch([b"x"] * 5_001), "over the transaction count"),
        (wire.encode(wire.Ack(bytes(32))), "not a batch"),
        (b"\x93\x01\x00\xdc\x00\x01\xc4\x03\x01tx", "array16 for one element"),
        (b"\x93\x01\x00\x91\xc5\x00\x03\x01tx", "bin16 for three bytes"),
        (wire.encode_batch([b"abc", b"abc"])[:-1], "one byte short"),
        (wire.encode_batch([b"abc", b"abc"]) + b"\x00", "one byte more"),
    ],
)
def test_what_it_does_not_vouch_for(data: bytes, why: str) -> None:
    assert not wire.is_uniform_batch(data, *LIMITS), why


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.sampled_from([1, 2, 255, 256, 300]), min_size=1, max_size=40),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=3),
)
def test_never_vouches_for_what_decode_refuses(
    sizes: list[int], flips: list[tuple[int, int]]
) -> None:
    data = bytearray(wire.encode_batch([bytes([7]) * n for n in sizes]))
    for where, value in flips:  # corrupt headers and payload alike
        data[where % len(data)] = value
    if wire.is_uniform_batch(bytes(data), *LIMITS):
        assert _decodes_to_a_batch(bytes(data), LIMITS)
