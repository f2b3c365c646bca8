"""Worker -> primary reports: `OurBatch(digest, worker_id)` and `OthersBatch(digest, worker_id)`.

Each report is a msgpack array `[kind, digest, worker_id]` in a plain frame
(worker/wire/frames.py), after a signed hello answering the primary's challenge; the
primary confirms what it processed with a running count (docs/protocol.md). Shared by
the worker's primary connector and the primary's digest collector: one definition.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

import msgpack

from worker.wire.messages import DIGEST_BYTES, WireError

#: A report frame is ~50 bytes; anything much larger is refused from its header.
MAX_REPORT_BYTES = 1024


class ReportKind(IntEnum):
    OUR_BATCH = 0
    OTHERS_BATCH = 1


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    digest: bytes
    worker_id: int


def encode_report(report: Report) -> bytes:
    return msgpack.packb([int(report.kind), report.digest, report.worker_id], use_bin_type=True)


def decode_report(data: bytes) -> Report:
    """Raises WireError("malformed") on anything but a well-formed report."""
    try:
        kind, digest, worker_id = msgpack.unpackb(data, raw=False)
        if type(kind) is not int:
            raise ValueError(f"kind {kind!r}")
        kind = ReportKind(kind)
    except Exception as exc:
        raise WireError("malformed", f"report: {exc}") from exc
    if type(digest) is not bytes or len(digest) != DIGEST_BYTES or type(worker_id) is not int:
        raise WireError("malformed", "report fields")
    return Report(kind, digest, worker_id)


# -- the link's handshake and confirmations (docs/protocol.md) ----------------------------
#: The primary's challenge: this many random bytes in one plain frame.
NONCE_BYTES = 32
_HELLO_DOMAIN = b"narwhal-testbed/worker-to-primary/v1"
CONFIRMATION = struct.Struct(">Q")


@dataclass(frozen=True, slots=True)
class PrimaryHello:
    """The worker's answer to the challenge: who it is, signed with its authority's key."""

    authority: bytes
    worker_id: int
    signature: bytes


def hello_message(nonce: bytes, authority: bytes, worker_id: int) -> bytes:
    """The bytes a worker signs: domain, the primary's nonce, who it claims to be."""
    return _HELLO_DOMAIN + nonce + authority + worker_id.to_bytes(4, "big")


def encode_hello(hello: PrimaryHello) -> bytes:
    return msgpack.packb([hello.authority, hello.worker_id, hello.signature], use_bin_type=True)


def decode_hello(data: bytes) -> PrimaryHello:
    """Raises WireError("malformed") on anything but a well-formed hello."""
    try:
        authority, worker_id, signature = msgpack.unpackb(data, raw=False)
    except Exception as exc:
        raise WireError("malformed", f"hello: {exc}") from exc
    if (
        type(authority) is not bytes
        or len(authority) != 32
        or type(worker_id) is not int
        or not 0 <= worker_id < 2**32
        or type(signature) is not bytes
        or len(signature) != 64
    ):
        raise WireError("malformed", "hello fields")
    return PrimaryHello(authority, worker_id, signature)


def encode_confirmation(count: int) -> bytes:
    """The primary's running count of reports it accepted on this connection."""
    return CONFIRMATION.pack(count)


def decode_confirmation(data: bytes) -> int:
    if len(data) != CONFIRMATION.size:
        raise WireError("malformed", "confirmation")
    return CONFIRMATION.unpack(data)[0]
