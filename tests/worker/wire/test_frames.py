"""The one frame codec, fed bytes by hand: no streams, no sockets."""

from __future__ import annotations

import pytest

from worker.wire.frames import (
    HEADER,
    LARGE_PAYLOAD,
    LENGTH,
    Frame,
    FrameBuffer,
    FrameError,
    FrameTooLarge,
    Kind,
    Truncated,
    encode_frame,
    frame,
)


def feed(buffer: FrameBuffer, data: bytes, chunk: int) -> list[bytes | Frame]:
    out: list[bytes | Frame] = []
    for i in range(0, len(data), chunk):
        buffer.receive_data(data[i : i + chunk])
        out += buffer.frames()
    return out


@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 22])
def test_plain_frames_survive_any_chunking(chunk: int) -> None:
    payloads = [b"", b"a", bytes(range(256)) * 1000, b"z" * (LARGE_PAYLOAD + 1)]
    data = b"".join(frame(p) for p in payloads)
    assert feed(FrameBuffer(1 << 20), data, chunk) == payloads


@pytest.mark.parametrize("chunk", [1, 13, 997, 1 << 22])
def test_tagged_frames_survive_any_chunking(chunk: int) -> None:
    big = bytes(range(256)) * 4096
    data = (
        encode_frame(Kind.REQUEST, 2**64 - 1, b"a")
        + encode_frame(Kind.RESPONSE, 7, big)
        + encode_frame(Kind.ERROR, 0)
    )
    frames = feed(FrameBuffer(len(big), tagged=True), data, chunk)
    assert frames == [
        Frame(Kind.REQUEST, 2**64 - 1, b"a"),
        Frame(Kind.RESPONSE, 7, big),
        Frame(Kind.ERROR, 0, b""),
    ]


def test_wire_layout_is_unchanged() -> None:
    assert frame(b"xy") == b"\x00\x00\x00\x02xy"
    assert encode_frame(Kind.RESPONSE, 5, b"p") == HEADER.pack(10, 1, 5) + b"p"
    assert HEADER.size == 13 and LENGTH.size == 4


def test_oversized_is_refused_from_the_header_alone() -> None:
    buffer = FrameBuffer(1000)
    buffer.receive_data(LENGTH.pack(1001))  # none of the payload sent
    with pytest.raises(FrameTooLarge) as err:
        buffer.next_frame()
    assert (err.value.reason, err.value.source) == ("oversized", "framing")


@pytest.mark.parametrize(
    "data",
    [LENGTH.pack(8) + bytes(8), LENGTH.pack(9) + bytes([99]) + bytes(8)],
    ids=["shorter than its header", "unknown kind"],
)
def test_malformed_tagged_frames(data: bytes) -> None:
    buffer = FrameBuffer(100, tagged=True)
    buffer.receive_data(data)
    with pytest.raises(FrameError) as err:
        buffer.next_frame()
    assert err.value.reason == "malformed_frame"


def test_kinds_can_be_restricted() -> None:
    buffer = FrameBuffer(100, tagged=True, kinds={Kind.REQUEST, Kind.RESPONSE})
    buffer.receive_data(encode_frame(Kind.HANDSHAKE, 0, b"x"))
    with pytest.raises(FrameError):
        buffer.next_frame()


def test_end_of_data_inside_a_frame_is_a_truncation() -> None:
    buffer = FrameBuffer(100)
    buffer.end_of_data()  # between frames: fine
    buffer.receive_data(frame(b"abc")[:-1])
    assert buffer.next_frame() is None
    with pytest.raises(Truncated) as err:
        buffer.end_of_data()
    assert err.value.reason == "malformed_frame"


def test_the_limit_can_change_between_frames() -> None:
    buffer = FrameBuffer(2)
    buffer.receive_data(frame(b"ab") + frame(b"abcd"))
    assert buffer.next_frame() == b"ab"
    buffer.max_payload = 4
    assert buffer.next_frame() == b"abcd"


def test_large_payload_is_kept_as_its_chunks_and_joined_once() -> None:
    payload = bytes(range(256)) * 1024
    data = frame(payload)
    buffer = FrameBuffer(len(payload))
    buffer.receive_data(data[:100])
    assert buffer.next_frame() is None
    assert buffer.wanted == len(payload) - 96  # what a reader asks for in one read
    rest = data[100:]
    for i in range(0, len(rest), 10_000):
        buffer.receive_data(rest[i : i + 10_000])
        assert buffer.buffered == 100 + i + len(rest[i : i + 10_000]) - 4
    assert buffer.wanted == 0 and buffer.partial
    assert buffer.next_frame() == payload
    assert buffer.wanted == 0 and not buffer.partial


def test_the_bytes_after_a_large_payload_start_the_next_frame() -> None:
    big = bytes(LARGE_PAYLOAD + 5)
    data = frame(big) + frame(b"next") + frame(b"")
    buffer = FrameBuffer(len(big))
    buffer.receive_data(data[:10])
    buffer.receive_data(bytearray(data[10:]))  # not bytes: copied, not kept by reference
    assert buffer.frames() == [big, b"next", b""]


@pytest.mark.parametrize("frozen", [False, True])
def test_a_frozen_view_is_kept_by_reference_any_other_view_is_copied(frozen: bool) -> None:
    payload = bytes(range(256)) * 1024
    data = frame(payload)
    buffer = FrameBuffer(len(payload))
    buffer.receive_data(data[:100])
    assert buffer.next_frame() is None  # a large payload started
    source = bytearray(data[100:])
    buffer.receive_data(memoryview(source), frozen=frozen)
    source[-1] ^= 1  # what `frozen` promises never happens; a copy does not see it
    got = buffer.next_frame()
    assert (got != payload) if frozen else (got == payload)


def test_an_announced_size_costs_nothing_until_its_bytes_arrive() -> None:
    """Item 3: a header announcing 8 MiB followed by a few bytes pins a few bytes."""
    buffer = FrameBuffer(8 << 20)
    buffer.receive_data(frame(bytes(8 << 20))[:60])
    assert buffer.next_frame() is None
    assert buffer.buffered < 100
    assert buffer.wanted == (8 << 20) - 56
