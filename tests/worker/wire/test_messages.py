"""Strict decoding: every message round-trips; anything else is a WireError with a reason."""

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.wire import messages as wire

LIMIT = 1 << 20
D = bytes(range(32))
#: Reasons added by the hardening (issue 12): element limits, canonical form, empty txs.
NEW_REASONS = {"too_many_elements", "non_canonical", "empty_transaction"}


@pytest.mark.parametrize(
    "msg",
    [
        wire.Batch([b"\x01abc", b"\x00" + bytes(8)]),
        wire.Ack(D),
        wire.Reject("bad_field"),
        wire.BatchRequest([D, D], bytes(32)),
        wire.Handshake(bytes(32), 3, 7, bytes(64)),
        wire.Hello(bytes(32), 0),
    ],
)
def test_round_trip(msg: wire.Message) -> None:
    assert wire.decode(wire.encode(msg), LIMIT) == msg


def test_digest_is_sha512_prefix() -> None:
    import hashlib

    data = wire.encode_batch([b"tx"])
    assert wire.digest(data) == hashlib.sha512(data).digest()[:32]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (msgpack.packb([1, 0, [b"a"]]) + b"x", "malformed"),
        (msgpack.packb({"v": 1}), "malformed"),
        (msgpack.packb([2, 0, [b"a"]]), "bad_version"),
        (msgpack.packb([1, 99]), "unknown_tag"),
        (msgpack.packb([1, 0, []]), "bad_field"),
        (msgpack.packb([1, 0, ["text"]]), "bad_field"),
        (msgpack.packb([1, 0, [b"a"], b"extra"]), "bad_field"),
        (msgpack.packb([1, 1, b"short"]), "bad_field"),
        (msgpack.packb([1, 4, bytes(32), -1, 0, bytes(64)]), "bad_field"),
        (msgpack.packb([1, 0, [b"a" * 100]]), "bad_field"),  # tx over the 50-byte limit below
    ],
)
def test_malformed_is_refused_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, LIMIT, max_transaction_size=50)
    assert info.value.reason == reason


def test_oversized_refused_before_parsing() -> None:
    data = wire.encode_batch([bytes(2000)])
    with pytest.raises(wire.WireError) as info:
        wire.decode(data, max_size=1000)
    assert info.value.reason == "oversized"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_arbitrary_bytes_never_escape_as_other_errors(data: bytes) -> None:
    try:
        wire.decode(data, LIMIT)
    except wire.WireError as exc:
        assert exc.reason in {"malformed", "bad_version", "unknown_tag", "bad_field", *NEW_REASONS}


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.binary(max_size=40)
        | st.text(max_size=10),
        lambda children: st.lists(children, max_size=5),
        max_leaves=20,
    )
)
def test_arbitrary_msgpack_values_are_refused_or_typed(value: object) -> None:
    data = msgpack.packb([1, 0, value])
    try:
        msg = wire.decode(data, LIMIT)
    except wire.WireError:
        return
    assert isinstance(msg, wire.Batch)
    assert msg.transactions and all(isinstance(t, bytes) for t in msg.transactions)
