"""Issue 12, items 8 and 13: bounded element counts, canonical encodings only."""

from __future__ import annotations

import msgpack
import pytest

from worker.config import Parameters
from worker.wire import messages as wire

LIMIT = 1 << 20


@pytest.mark.parametrize(
    "obj",
    [
        [1, 0.0, [b"\x01tx"]],  # a float tag
        [1, False, [b"\x01tx"]],  # a bool tag
        [True, 0, [b"\x01tx"]],  # a bool version
    ],
)
def test_float_and_bool_tags_are_refused(obj: list) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, LIMIT)
    assert info.value.reason in {"unknown_tag", "bad_version"}


def test_one_transaction_list_has_one_encoding() -> None:
    """The same list in a wider int/array/bin form would hash to another digest."""
    txs = [b"\x01tx"]
    canonical = wire.encode_batch(txs)
    wider = [
        b"\x93\xcc\x01\x00\x91\xc4\x03\x01tx",  # version as uint8
        b"\x93\x01\x00\xdc\x00\x01\xc4\x03\x01tx",  # array16 for one element
        b"\x93\x01\x00\x91\xc5\x00\x03\x01tx",  # bin16 for three bytes
    ]
    assert wire.decode(canonical, LIMIT) == wire.Batch(txs)
    for data in wider:
        assert msgpack.unpackb(data) == msgpack.unpackb(canonical)
        with pytest.raises(wire.WireError) as info:
            wire.decode(data, LIMIT)
        assert info.value.reason == "non_canonical"


def test_element_bomb_is_refused_before_it_is_built() -> None:
    params = Parameters(batch_size=10_000, max_message_size=1 << 20, max_transaction_size=4096)
    bomb = wire.encode_batch([b"\x01"] * 200_000)  # 600 KB, 200k elements
    with pytest.raises(wire.WireError) as info:
        wire.decode(bomb, params.max_message_size, 4096, params.max_batch_transactions)
    assert info.value.reason == "too_many_elements"
    legit = wire.encode_batch([b"\x01"] * params.max_batch_transactions)
    assert wire.decode(legit, params.max_message_size, 4096, params.max_batch_transactions)


def test_empty_transactions_inside_a_batch_are_refused() -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(wire.encode_batch([b"\x01tx", b""]), LIMIT)
    assert info.value.reason == "empty_transaction"
