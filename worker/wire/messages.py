"""Worker-to-worker messages: msgpack arrays `[version, tag, *fields]`, strictly decoded.

One tagged type per kind. Decoding checks the size limit before parsing, bounds the
number of elements msgpack may build (derived from the parameters, so an "element
bomb" costs no more than a legitimate batch), checks every field's type after, and
accepts only the canonical encoding (the bytes our encoder produces for the decoded
message: one message, one digest), so a malformed or hostile frame is refused with a
short reason code (used as a metrics label) instead of raising something unexpected.
The layout is specified in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from typing import Any

import msgpack

from worker.errors import Refused

PROTOCOL_VERSION = 1
DIGEST_BYTES = 32
MAX_REASON_CHARS = 256


class Tag(IntEnum):
    BATCH = 0
    ACK = 1
    REJECT = 2
    BATCH_REQUEST = 3
    HANDSHAKE = 4
    HELLO = 5


class WireError(Refused, ValueError):
    """A message that was refused; `reason` is a short, low-cardinality code."""

    source = "wire"


@dataclass(frozen=True, slots=True)
class Batch:
    transactions: list[bytes]


@dataclass(frozen=True, slots=True)
class Ack:
    digest: bytes


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str


@dataclass(frozen=True, slots=True)
class BatchRequest:
    digests: list[bytes]
    origin: bytes


@dataclass(frozen=True, slots=True)
class Handshake:
    authority: bytes
    worker_id: int
    epoch: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class Hello:
    """Unauthenticated peer introduction used by the plain TCP baseline."""

    authority: bytes
    worker_id: int


Message = Batch | Ack | Reject | BatchRequest | Handshake | Hello


def encode(msg: Message) -> bytes:
    match msg:
        case Batch(transactions):
            fields: list[Any] = [transactions]
            tag = Tag.BATCH
        case Ack(digest):
            fields, tag = [digest], Tag.ACK
        case Reject(reason):
            fields, tag = [reason[:MAX_REASON_CHARS]], Tag.REJECT
        case BatchRequest(digests, origin):
            fields, tag = [digests, origin], Tag.BATCH_REQUEST
        case Handshake(authority, worker_id, epoch, signature):
            fields, tag = [authority, worker_id, epoch, signature], Tag.HANDSHAKE
        case Hello(authority, worker_id):
            fields, tag = [authority, worker_id], Tag.HELLO
        case _:
            raise TypeError(f"not a wire message: {msg!r}")
    return msgpack.packb([PROTOCOL_VERSION, int(tag), *fields], use_bin_type=True)


# -- batches without msgpack's per-element work ---------------------------------------
# A batch is by far the largest and most frequent message, and its canonical encoding is
# simple: `93 01 00`, an array header, then one `bin` item per transaction. Writing it by
# hand is byte-for-byte what msgpack produces (tests/worker/wire/test_batch_codec.py)
# and lets the intake build a batch from whole bursts at C speed (worker/wire/transactions.py).
BATCH_PREFIX = bytes((0x93, PROTOCOL_VERSION, Tag.BATCH))


def array_header(count: int) -> bytes:
    """msgpack's header of an array of `count` elements (fixarray, array16, array32)."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


@lru_cache(maxsize=4096)
def bin_header(size: int) -> bytes:
    """msgpack's header of a `bin` item of `size` bytes (bin8, bin16, bin32)."""
    if size < 1 << 8:
        return bytes((0xC4, size))
    if size < 1 << 16:
        return b"\xc5" + size.to_bytes(2, "big")
    return b"\xc6" + size.to_bytes(4, "big")


def bin_header_size(size: int) -> int:
    return 2 if size < 1 << 8 else 3 if size < 1 << 16 else 5


def encode_batch_items(body: Sequence[bytes | memoryview | bytearray], count: int) -> bytes:
    """The Batch message whose transactions are `count` bin items, concatenated in `body`."""
    return b"".join((BATCH_PREFIX, array_header(count), *body))


def batch_items(transactions: Iterable[bytes]) -> list[bytes]:
    """Header and payload of every transaction, as inside a batch message."""
    out: list[bytes] = []
    for tx in transactions:
        out += (bin_header(len(tx)), tx)
    return out


def encode_batch(transactions: list[bytes]) -> bytes:
    """Same bytes as `encode(Batch(transactions))`."""
    return encode_batch_items(batch_items(transactions), len(transactions))


def _canonical_batch_size(sizes: list[int]) -> int:
    """The length of the canonical encoding of a batch of transactions of these sizes."""
    if not sizes:
        return len(BATCH_PREFIX) + 1
    low, high = min(sizes), max(sizes)
    if bin_header_size(low) == bin_header_size(high):
        headers = bin_header_size(high) * len(sizes)
    else:
        headers = sum(map(bin_header_size, sizes))
    return len(BATCH_PREFIX) + len(array_header(len(sizes))) + headers + sum(sizes)


def digest(serialized: bytes) -> bytes:
    """The batch digest: the first 32 bytes of SHA-512 over the serialized batch message."""
    return hashlib.sha512(serialized).digest()[:DIGEST_BYTES]


def _bytes(value: Any, what: str, size: int | None = None) -> bytes:
    if type(value) is not bytes:
        raise WireError("bad_field", f"{what} must be bytes")
    if size is not None and len(value) != size:
        raise WireError("bad_field", f"{what} must be {size} bytes")
    return value


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise WireError("bad_field", f"{what} must be a non-negative integer")
    return value


def _arity(fields: list[Any], n: int, tag: Tag) -> None:
    if len(fields) != n:
        raise WireError("bad_field", f"{tag.name} takes {n} fields, got {len(fields)}")


def decode(
    data: bytes,
    max_size: int,
    max_transaction_size: int | None = None,
    max_transactions: int | None = None,
    min_transaction_size: int = 1,
) -> Message:
    """Decode one message or raise `WireError` with a reason code.

    `max_transactions` bounds every array (default: what `max_size` could hold)."""
    msg = _decode(data, max_size, max_transaction_size, max_transactions, min_transaction_size)
    if isinstance(msg, Batch):
        # Every field of a decoded batch is type-checked and each has exactly one shortest
        # msgpack encoding, ours; any other one is longer. So: canonical iff as long.
        canonical = _canonical_batch_size(list(map(len, msg.transactions))) == len(data)
    else:
        canonical = encode(msg) == data
    if not canonical:
        raise WireError("non_canonical", "not the canonical encoding of its message")
    return msg


def is_uniform_batch(
    data: bytes,
    max_size: int,
    max_transaction_size: int | None = None,
    max_transactions: int | None = None,
    min_transaction_size: int = 1,
) -> bool:
    """True when `data` is the canonical encoding of a batch whose transactions all have
    one size within the limits: a batch `decode` accepts, checked at the stride of its
    bin headers without an object per transaction. False means "not shown": `decode`
    decides. Why: decoding a 500 KB batch holds the GIL for ~200 us in C code, which
    the worker's event loop cannot interrupt (README, "Measured")."""
    start = len(BATCH_PREFIX)
    if len(data) > max_size or not data.startswith(BATCH_PREFIX) or len(data) < start + 3:
        return False
    kind = data[start]
    count = (
        kind & 0x0F
        if kind & 0xF0 == 0x90
        else int.from_bytes(data[start + 1 : start + 3], "big")
        if kind == 0xDC
        else int.from_bytes(data[start + 1 : start + 5], "big")
        if kind == 0xDD
        else 0
    )
    limit = max_transaction_size or max_size
    max_elements = max(8, max_transactions if max_transactions else max_size // 2)
    if not 0 < count <= max_elements:
        return False
    first = start + len(array_header(count))
    if data[start:first] != array_header(count) or len(data) < first + 2:
        return False
    size = (
        data[first + 1]
        if data[first] == 0xC4
        else int.from_bytes(data[first + 1 : first + 3], "big")
        if data[first] == 0xC5
        else int.from_bytes(data[first + 1 : first + 5], "big")
    )
    header = bin_header(size)
    stride = len(header) + size
    if not min_transaction_size <= size <= limit or first + count * stride != len(data):
        return False
    return all(data[first + i :: stride] == bytes((byte,)) * count for i, byte in enumerate(header))


def _unpack(data: bytes, max_elements: int, max_bin: int) -> Any:
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_REASON_CHARS * 4,
            max_bin_len=max_bin,
            max_array_len=max_elements,
            max_map_len=0,
            max_ext_len=0,
        )
    except ValueError as exc:
        text = str(exc)
        reason = (
            "too_many_elements"
            if "max_array_len" in text
            else "bad_field"
            if "max_bin_len" in text
            else "malformed"
        )
        raise WireError(reason, type(exc).__name__) from exc
    except Exception as exc:  # msgpack may raise others (e.g. TypeError) on garbage
        raise WireError("malformed", type(exc).__name__) from exc


def _decode(
    data: bytes,
    max_size: int,
    max_transaction_size: int | None,
    max_transactions: int | None,
    min_transaction_size: int,
) -> Message:
    if len(data) > max_size:
        raise WireError("oversized", f"{len(data)} bytes > limit {max_size}")
    limit = max_transaction_size or max_size
    max_elements = max(8, max_transactions if max_transactions else max_size // 2)
    obj = _unpack(data, max_elements, max(limit, 64))
    if type(obj) is not list or len(obj) < 2:
        raise WireError("malformed", "expected an array [version, tag, ...]")
    version, tag, *fields = obj
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise WireError("bad_version", f"version {version!r}, expected {PROTOCOL_VERSION}")
    try:
        if type(tag) is not int:
            raise ValueError(tag)
        tag = Tag(tag)
    except ValueError as exc:
        raise WireError("unknown_tag", f"tag {tag!r}") from exc
    match tag:
        case Tag.BATCH:
            _arity(fields, 1, tag)
            txs = fields[0]
            if type(txs) is not list:
                raise WireError("bad_field", "BATCH transactions must be an array")
            if not txs:
                raise WireError("bad_field", "empty batch")
            # Whole-list checks at C speed (a batch holds thousands of transactions).
            if set(map(type, txs)) != {bytes}:
                raise WireError("bad_field", "transactions must be bytes")
            sizes = list(map(len, txs))
            if max(sizes) > limit:
                raise WireError("bad_field", f"transaction of {max(sizes)} bytes > {limit}")
            if min(sizes) < min_transaction_size:
                raise WireError("empty_transaction", f"transaction of {min(sizes)} bytes")
            return Batch(txs)
        case Tag.ACK:
            _arity(fields, 1, tag)
            return Ack(_bytes(fields[0], "digest", DIGEST_BYTES))
        case Tag.REJECT:
            _arity(fields, 1, tag)
            if type(fields[0]) is not str:
                raise WireError("bad_field", "reject reason must be a string")
            return Reject(fields[0])
        case Tag.BATCH_REQUEST:
            _arity(fields, 2, tag)
            if type(fields[0]) is not list:
                raise WireError("bad_field", "digests must be an array")
            digests = [_bytes(d, "digest", DIGEST_BYTES) for d in fields[0]]
            return BatchRequest(digests, _bytes(fields[1], "origin", 32))
        case Tag.HANDSHAKE:
            _arity(fields, 4, tag)
            return Handshake(
                _bytes(fields[0], "authority", 32),
                _uint(fields[1], "worker_id"),
                _uint(fields[2], "epoch"),
                _bytes(fields[3], "signature", 64),
            )
        case Tag.HELLO:
            _arity(fields, 2, tag)
            return Hello(_bytes(fields[0], "authority", 32), _uint(fields[1], "worker_id"))
    raise WireError("unknown_tag", f"tag {tag!r}")  # pragma: no cover
