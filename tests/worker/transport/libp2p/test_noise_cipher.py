"""The Noise transport-phase ciphers (noise_cipher.py) without sockets, checked against the
`noise` library py-libp2p itself uses, after a real XX handshake between two of its
connection objects."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from noise.connection import Keypair, NoiseConnection

from worker.transport.libp2p.muxer import batches
from worker.transport.libp2p.noise_cipher import (
    LENGTH,
    MAX_MESSAGE,
    MAX_PLAINTEXT,
    NoiseDecryptError,
    NoiseOpener,
    NoiseSealer,
)

SIZES = [0, 1, 1_000, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 2_000_000]


def _static_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _handshake() -> tuple[NoiseConnection, NoiseConnection]:
    """Initiator and responder after Noise_XX_25519_ChaChaPoly_SHA256, as in libp2p."""
    sides = []
    for initiator in (True, False):
        side = NoiseConnection.from_name(b"Noise_XX_25519_ChaChaPoly_SHA256")
        side.set_as_initiator() if initiator else side.set_as_responder()
        side.set_keypair_from_private_bytes(Keypair.STATIC, _static_key())
        side.start_handshake()
        sides.append(side)
    a, b = sides
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    assert a.handshake_finished and b.handshake_finished
    return a, b


def _ours(side: NoiseConnection) -> tuple[NoiseSealer, NoiseOpener]:
    protocol = side.noise_protocol
    send, receive = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
    return NoiseSealer(send.k, send.n), NoiseOpener(receive.k, receive.n)


def _messages(wire: bytes) -> list[bytes]:
    """Split a sealed buffer at its length prefixes."""
    out, pos = [], 0
    while pos < len(wire):
        (size,) = LENGTH.unpack_from(wire, pos)
        out.append(wire[pos + LENGTH.size : pos + LENGTH.size + size])
        pos += LENGTH.size + size
    assert pos == len(wire)
    return out


@pytest.mark.parametrize("size", SIZES)
def test_sealed_writes_open_with_the_noise_library(size: int) -> None:
    a, b = _handshake()
    sealer, _ = _ours(a)
    data = random.randbytes(size)
    messages = _messages(b"".join(sealer.seal([data])))
    assert len(messages) == max(1, -(-size // MAX_PLAINTEXT))
    assert all(len(m) <= MAX_MESSAGE for m in messages)
    assert b"".join(bytes(b.decrypt(m)) for m in messages) == data


@pytest.mark.parametrize("size", SIZES)
def test_noise_library_messages_open_with_ours(size: int) -> None:
    a, b = _handshake()
    _, opener = _ours(b)
    data = random.randbytes(size)
    chunks = [data[i : i + MAX_PLAINTEXT] for i in range(0, len(data), MAX_PLAINTEXT)] or [b""]
    wire = b"".join(LENGTH.pack(len(m)) + m for m in (a.encrypt(c) for c in chunks))
    assert b"".join(opener.open(wire)) == data


def test_any_split_of_the_byte_stream_opens_the_same() -> None:
    a, _ = _handshake()
    sealer, _ = _ours(a)
    writes = [random.randbytes(n) for n in (5, 70_000, 0, 1, 200_000, 3)]
    wire = b"".join(b"".join(sealer.seal([w])) for w in writes)
    protocol = a.noise_protocol.cipher_state_encrypt
    for _ in range(20):
        opener = NoiseOpener(protocol.k, 0)
        got, pos = [], 0
        while pos < len(wire):
            step = random.choice([1, 2, 3, 17, 65_537, 300_000])
            got += opener.open(wire[pos : pos + step])
            pos += step
        assert b"".join(got) == b"".join(writes)
        assert opener.pending == 0


def test_nonces_continue_where_the_handshake_left_them() -> None:
    a, b = _handshake()
    for text in (b"one", b"two"):  # py-libp2p already sent two messages on this session
        assert bytes(b.decrypt(a.encrypt(text))) == text
    sealer, _ = _ours(a)
    assert sealer.nonce == 2
    (message,) = _messages(b"".join(sealer.seal([b"three"])))
    assert bytes(b.decrypt(message)) == b"three"


def test_a_tampered_or_replayed_message_ends_the_connection() -> None:
    a, b = _handshake()
    sealer, _ = _ours(a)
    _, opener = _ours(b)
    wire = bytearray(b"".join(sealer.seal([b"payload"])))
    good = bytes(wire)
    wire[-1] ^= 1
    with pytest.raises(NoiseDecryptError) as refused:
        NoiseOpener(*_keys(b)).open(wire)
    assert refused.value.reason == "noise_invalid_message"
    assert opener.open(good) == [b"payload"]
    with pytest.raises(NoiseDecryptError):
        opener.open(good)  # the same message again: the nonce has moved on


def test_a_message_shorter_than_its_tag_is_refused() -> None:
    _, b = _handshake()
    with pytest.raises(NoiseDecryptError):
        NoiseOpener(*_keys(b)).open(LENGTH.pack(3) + b"abc")


def _keys(side: NoiseConnection) -> tuple[bytes, int]:
    receive = side.noise_protocol.cipher_state_decrypt
    return receive.k, receive.n


def test_grouping_a_write_for_sending_never_changes_its_messages() -> None:
    """The muxer cuts a large write into groups it seals and sends one after the other
    (muxer.batches); the messages must be those of the write sealed whole."""
    a, _ = _handshake()
    whole, grouped = _ours(a)[0], _ours(a)[0]
    segments = [b"h" * 20, random.randbytes(500_000), b"t" * 7, random.randbytes(3 * MAX_PLAINTEXT)]
    groups = batches(segments, 128 * 1024)
    assert all(sum(len(p) for p in g) < 128 * 1024 + 2 * MAX_PLAINTEXT for g in groups)
    assert len(groups) > 4
    assert b"".join(whole.seal(segments)) == b"".join(
        b"".join(grouped.seal(group)) for group in groups
    )
