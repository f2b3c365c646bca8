"""The batches the interop tests exchange, and the byte layouts both peers speak.

Pure (msgpack, hashlib, struct and the project's wire codecs): the stock py-libp2p peer
imports it, and `js/wire.mjs` implements the same functions for the js-libp2p peer.

A test batch is a canonical BATCH message of an exact size, built from a label
(`index`) alone: transaction 0 begins with `u32 index | u32 size` and the rest of every
transaction is SHAKE-256 output, so a receiver can rebuild what was meant and compare
byte for byte (a swapped, lost or duplicated chunk changes it).
"""

from __future__ import annotations

import hashlib
import struct

from worker.wire import messages as wire

#: Transactions of at most this many bytes (below the default max_transaction_size).
TX_LIMIT = 100_000
LABEL = struct.Struct(">II")  # index, size
#: Noise's largest plaintext per transport message: 65,535 minus the 16-byte tag.
NOISE_CHUNK = 65_519
#: Bytes around a request's payload on the wire: the frame header (u32 length, u8 kind,
#: u64 request id) and, in front of it when a frame travels alone, Yamux's 12-byte header.
FRAME_HEADER = 13
YAMUX_HEADER = 12

#: Payload sizes each side sends: small; the Noise chunk boundary as the payload, as the
#: frame and as a lone Yamux frame; two chunks; beyond the 256 KiB default Yamux window;
#: then a burst of small ones of varied sizes (many frames per write, answers coalesced).
SIZES = (
    1_000,
    NOISE_CHUNK,
    NOISE_CHUNK + 1,
    NOISE_CHUNK - FRAME_HEADER,
    NOISE_CHUNK - FRAME_HEADER + 1,
    NOISE_CHUNK - FRAME_HEADER - YAMUX_HEADER,
    NOISE_CHUNK - FRAME_HEADER - YAMUX_HEADER + 1,
    2 * NOISE_CHUNK,
    600_000,
    1_200_000,
    1_000,
    *(200 + 37 * i for i in range(64)),
)


def _bin_header(n: int) -> int:
    return 2 if n < 1 << 8 else 3 if n < 1 << 16 else 5


def tx_lengths(size: int) -> list[int]:
    """Transaction lengths whose BATCH message is exactly `size` bytes (at most 15 of them:
    fixarray header, version, tag and the transactions' fixarray header take 4 bytes)."""
    remaining, lengths = size - 4, []
    while remaining > TX_LIMIT + _bin_header(TX_LIMIT):
        lengths.append(TX_LIMIT)
        remaining -= TX_LIMIT + _bin_header(TX_LIMIT)
    fits = [
        n for n in (remaining - 2, remaining - 3, remaining - 5) if n + _bin_header(n) == remaining
    ]
    last = fits[0] if fits else None
    if last is None or last < LABEL.size or len(lengths) >= 15:
        raise ValueError(f"no test batch of exactly {size} bytes")
    return [*lengths, last]


def batch(index: int, size: int) -> bytes:
    """The test batch labelled `index`, exactly `size` bytes of canonical BATCH message."""
    txs = []
    for i, length in enumerate(tx_lengths(size)):
        head = LABEL.pack(index, size) if i == 0 else b""
        txs.append(
            head + hashlib.shake_256(b"%d/%d/%d" % (index, size, i)).digest(length - len(head))
        )
    data = wire.encode_batch(txs)
    assert len(data) == size, (len(data), size)
    return data


def label(data: bytes) -> tuple[int, int]:
    """(index, size) of a test batch, checked byte for byte; ValueError if it is not one."""
    try:
        msg = wire.decode(data, max(len(data), 1024), TX_LIMIT)
        index, size = LABEL.unpack_from(msg.transactions[0])  # type: ignore[union-attr]
    except (wire.WireError, AttributeError, IndexError, struct.error) as exc:
        raise ValueError(f"not a test batch: {exc}") from exc
    if size != len(data) or batch(index, size) != data:
        raise ValueError(f"batch {index} of {len(data)} bytes differs from the one sent")
    return index, size


def ack(data: bytes) -> bytes:
    """What a worker answers to a stored batch: ACK with the batch digest."""
    return wire.encode(wire.Ack(wire.digest(data)))


def is_ack_of(answer: bytes, data: bytes) -> bool:
    return answer == ack(data)
