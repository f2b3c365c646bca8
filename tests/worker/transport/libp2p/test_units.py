"""Framing and handshake verification without any network."""

from __future__ import annotations

import pytest
import trio

from cluster.committee import make_local_committee
from worker.keys import KeyPair
from worker.transport.libp2p.framing import (
    LEN,
    Frame,
    FrameError,
    FrameReader,
    Kind,
    StreamClosed,
    encode_frame,
)
from worker.transport.libp2p.handshake import (
    HandshakeRejected,
    Verifier,
    decode_payload,
    encode_payload,
    make_handshake,
    signing_message,
)
from worker.transport.libp2p.link import FrameWriter
from worker.wire import messages as wire
from worker.wire.frames import HEADER


class ChunkedStream:
    """Hands out bytes in small pieces, like Yamux does, then EOF (or a reset)."""

    def __init__(self, data: bytes, chunk: int = 7, reset_at_end: bool = False) -> None:
        self._data, self._chunk, self._reset = data, chunk, reset_at_end

    async def read(self, n: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if not self._data:
            if self._reset:
                raise ConnectionResetError("reset")
            raise EOFError
        piece, self._data = self._data[: self._chunk], self._data[self._chunk :]
        return piece


async def read_all(data: bytes, max_payload: int = 1 << 20, chunk: int = 7) -> list[Frame]:
    reader = FrameReader(ChunkedStream(data, chunk), max_payload)
    frames = []
    while (frame := await reader.read_frame()) is not None:
        frames.append(frame)
    return frames


async def test_frames_round_trip_across_arbitrary_chunking() -> None:
    big = bytes(range(256)) * 4096  # 1 MiB, far beyond what read_exactly copes with
    data = encode_frame(Kind.REQUEST, 2**64 - 1, b"a") + encode_frame(Kind.RESPONSE, 7, big)
    frames = await read_all(
        data + encode_frame(Kind.ERROR, 0, b""), max_payload=len(big), chunk=997
    )
    assert frames == [
        Frame(Kind.REQUEST, 2**64 - 1, b"a"),
        Frame(Kind.RESPONSE, 7, big),
        Frame(Kind.ERROR, 0, b""),
    ]
    assert LEN.unpack_from(data)[0] == 9 + 1  # the length counts kind + id + payload


async def test_oversized_is_refused_from_the_header_alone() -> None:
    header = LEN.pack(9 + 1001) + bytes(9)  # claims 1001 bytes, sends none of them
    with pytest.raises(FrameError) as err:
        await read_all(header, max_payload=1000)
    assert err.value.reason == "oversized"


@pytest.mark.parametrize(
    "data",
    [
        LEN.pack(8) + bytes(8),  # shorter than kind + request id
        LEN.pack(9) + bytes([99]) + bytes(8),  # unknown kind
        encode_frame(Kind.REQUEST, 1, b"abc")[:-1],  # truncated
        b"\x00\x00",  # truncated length
    ],
)
async def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(FrameError) as err:
        await read_all(data)
    assert err.value.reason == "malformed_frame"


async def test_a_reset_is_not_a_clean_end() -> None:
    reader = FrameReader(ChunkedStream(b"", reset_at_end=True), 100)
    with pytest.raises(StreamClosed):
        await reader.read_frame()


class RecordingStream:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.writes.append(data)
        await trio.lowlevel.checkpoint()


async def test_writer_coalesces_frames_queued_together_and_keeps_order() -> None:
    stream, writer = RecordingStream(), FrameWriter()
    frames = [encode_frame(Kind.REQUEST, i, b"x" * 100) for i in range(50)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, stream)
        for frame in frames:
            writer.put(frame)
        await trio.testing.wait_all_tasks_blocked()
        writer.close()
    assert b"".join(stream.writes) == b"".join(frames)
    assert len(stream.writes) == 1


async def test_writer_gathers_answers_while_more_are_owed() -> None:
    owed = [10]
    stream, writer = RecordingStream(), FrameWriter(lambda: owed[0] > 0)

    async def answer_slowly() -> None:  # a router yielding between answers
        while owed[0]:
            owed[0] -= 1
            writer.put(encode_frame(Kind.RESPONSE, owed[0], b"ok"))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer.run, stream)
        nursery.start_soon(answer_slowly)
        await trio.testing.wait_all_tasks_blocked()
        writer.close()
    assert len(b"".join(stream.writes)) == 10 * (HEADER.size + 2)
    assert len(stream.writes) <= 2


# -- handshake ---------------------------------------------------------------------------
PEER = b"\x00\x24" + bytes(range(36))  # any PeerId bytes
OTHER_PEER = b"\x00\x24" + bytes(range(1, 37))


@pytest.fixture
def setup() -> tuple[Verifier, list[KeyPair]]:
    committee, keys = make_local_committee(3)
    return Verifier(committee, keys[0].name, 0), keys


def test_canonical_message_binds_every_field() -> None:
    base = signing_message(PEER, 0, 0)
    assert base.startswith(b"narwhal-worker-handshake-v1")
    assert (
        len(
            {
                base,
                signing_message(OTHER_PEER, 0, 0),
                signing_message(PEER, 1, 0),
                signing_message(PEER, 0, 1),
            }
        )
        == 4
    )


def test_valid_handshake_names_the_authority(setup: tuple[Verifier, list[KeyPair]]) -> None:
    verifier, keys = setup
    claim = decode_payload(make_handshake(keys[1], PEER, 0, 0))
    assert verifier.check(claim, PEER) == keys[1].name


def _reason(verifier: Verifier, payload: bytes, peer: bytes = PEER) -> str:
    with pytest.raises(HandshakeRejected) as err:
        verifier.check(decode_payload(payload), peer)
    return err.value.reason


def test_rejections_by_reason(setup: tuple[Verifier, list[KeyPair]]) -> None:
    verifier, keys = setup
    stranger = KeyPair.generate()
    assert _reason(verifier, make_handshake(stranger, PEER, 0, 0)) == "unknown_key"
    assert _reason(verifier, make_handshake(keys[0], PEER, 0, 0)) == "own_key"
    assert _reason(verifier, make_handshake(keys[1], PEER, 1, 0)) == "wrong_worker"
    assert _reason(verifier, make_handshake(keys[1], PEER, 0, 5)) == "wrong_epoch"
    # A valid handshake replayed on another connection: Noise authenticated another host.
    assert _reason(verifier, make_handshake(keys[1], PEER, 0, 0), OTHER_PEER) == "peer_id_mismatch"
    # Signed by someone else than the authority it names.
    forged = wire.Handshake(keys[1].public_bytes, 0, 0, keys[2].sign(signing_message(PEER, 0, 0)))
    assert _reason(verifier, encode_payload(forged, PEER)) == "bad_signature"
    # Claiming a PeerId the signature does not cover.
    assert (
        _reason(
            verifier,
            make_handshake(keys[1], OTHER_PEER, 0, 0)[:2]
            + PEER
            + make_handshake(keys[1], OTHER_PEER, 0, 0)[2 + len(PEER) :],
        )
        == "bad_signature"
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00",
        b"\x00\x05abc",
        b"\x00\x01x" + b"\x93garbage",
        b"\x00\x01x" + wire.encode(wire.Ack(bytes(32))),
    ],
)
def test_malformed_handshakes(payload: bytes) -> None:
    with pytest.raises(HandshakeRejected) as err:
        decode_payload(payload)
    assert err.value.reason == "malformed"
