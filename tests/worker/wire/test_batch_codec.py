"""The hand-written batch codec is msgpack's canonical encoding, byte for byte, and the
length rule of canonical decoding refuses every wider form of the same batch."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.wire import messages as wire

LIMIT = 1 << 24
#: sizes at the edges of msgpack's bin8/bin16/bin32 headers
EDGE_SIZES = [1, 2, 255, 256, 65535, 65536, 70000]


def reference(transactions: list[bytes]) -> bytes:
    return msgpack.packb([wire.PROTOCOL_VERSION, int(wire.Tag.BATCH), transactions])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=40))
def test_encode_batch_is_msgpack(transactions: list[bytes]) -> None:
    data = wire.encode_batch(transactions)
    assert data == reference(transactions) == wire.encode(wire.Batch(transactions))
    assert wire.decode(data, LIMIT) == wire.Batch(transactions)


@pytest.mark.parametrize("size", EDGE_SIZES)
@pytest.mark.parametrize("count", [1, 15, 16, 17])
def test_header_edges(size: int, count: int) -> None:
    transactions = [bytes([1]) * size] * count
    data = wire.encode_batch(transactions)
    assert data == reference(transactions)
    assert wire.decode(data, LIMIT) == wire.Batch(transactions)


@pytest.mark.parametrize("count", [65535, 65536])
def test_array_header_edges(count: int) -> None:
    transactions = [b"\x01"] * count
    assert wire.encode_batch(transactions) == reference(transactions)


def test_mixed_header_sizes_in_one_batch() -> None:
    transactions = [bytes([1]) * size for size in EDGE_SIZES]
    data = wire.encode_batch(transactions)
    assert data == reference(transactions)
    assert wire.decode(data, LIMIT) == wire.Batch(transactions)


def _wider_bin(tx: bytes) -> bytes:
    """`tx` as a bin item one size class wider than needed."""
    if len(tx) < 256:
        return b"\xc5" + len(tx).to_bytes(2, "big") + tx
    return b"\xc6" + len(tx).to_bytes(4, "big") + tx


@pytest.mark.parametrize("size", [3, 300])
@pytest.mark.parametrize("which", [0, 1, 16])
def test_one_wider_item_anywhere_is_non_canonical(size: int, which: int) -> None:
    transactions = [bytes([1]) * size] * 17
    items = [wire.bin_header(len(tx)) + tx for tx in transactions]
    items[which] = _wider_bin(transactions[which])
    data = wire.BATCH_PREFIX + wire.array_header(17) + b"".join(items)
    assert msgpack.unpackb(data) == msgpack.unpackb(reference(transactions))
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, LIMIT)
    assert info.value.reason == "non_canonical"


def test_a_wider_array_header_is_non_canonical() -> None:
    transactions = [b"\x01tx"] * 3
    data = (
        wire.BATCH_PREFIX
        + b"\xdd"
        + (3).to_bytes(4, "big")
        + b"".join(wire.batch_items(transactions))
    )
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, LIMIT)
    assert info.value.reason == "non_canonical"


def test_items_can_be_assembled_from_pieces() -> None:
    transactions = [b"\x01a", b"\x01bb", b"\x00" + bytes(16)]
    items = b"".join(wire.batch_items(transactions))
    pieces = [memoryview(items)[:3], bytearray(items[3:7]), items[7:]]
    assert wire.encode_batch_items(pieces, 3) == wire.encode_batch(transactions)
