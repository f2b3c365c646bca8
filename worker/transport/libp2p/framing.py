"""Frames on libp2p streams: `u32 len | u8 kind | u64 request_id | payload`, big-endian.

`len` counts everything after itself (9 + payload), as in the TCP framing. Frames are
read with our own buffer because py-libp2p's `read_exactly` gives up after 101
partial reads (a few MB on Yamux), and batches may reach `max_message_size`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

LEN = struct.Struct(">I")
HEAD = struct.Struct(">BQ")
HEADER_BYTES = LEN.size + HEAD.size  # 13
READ_CHUNK = 1 << 20


class Kind(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    ERROR = 2  # a refused request: payload is a short utf-8 reason code
    HANDSHAKE = 3  # payload: u16 len | signer PeerId bytes | wire.Handshake
    HANDSHAKE_OK = 4  # the dialer's confirmation that it admitted the listener


class FrameError(Exception):
    """A frame that cannot be accepted; `reason` is a low-cardinality code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class StreamClosed(Exception):
    """The stream ended (EOF, reset or a broken connection)."""


@dataclass(frozen=True, slots=True)
class Frame:
    kind: Kind
    request_id: int
    payload: bytes


class ByteStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


def encode_frame(kind: Kind, request_id: int, payload: bytes = b"") -> bytes:
    return LEN.pack(HEAD.size + len(payload)) + HEAD.pack(kind, request_id) + payload


class FrameReader:
    """Buffered frame reader; refuses a frame from its header alone when it is too big."""

    def __init__(self, stream: ByteStream, max_payload: int) -> None:
        self._stream = stream
        self._max_payload = max_payload
        self._buf = bytearray()
        self._eof = False

    async def _fill(self, need: int) -> bool:
        """Read until `need` bytes are buffered; False on EOF first."""
        while len(self._buf) < need:
            if self._eof:
                return False
            try:
                chunk = await self._stream.read(READ_CHUNK)
            except EOFError:  # StreamEOF: the writer closed its side
                chunk = b""
            except Exception as exc:  # StreamReset, StreamError, a broken connection
                raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
            if not chunk:
                self._eof = True
            self._buf += chunk
        return True

    async def read_frame(self) -> Frame | None:
        """The next frame, or None on a clean end of stream between frames."""
        if not await self._fill(LEN.size):
            if self._buf:
                raise FrameError("malformed", "truncated length")
            return None
        (length,) = LEN.unpack_from(self._buf)
        if length < HEAD.size:
            raise FrameError("malformed", f"frame length {length}")
        if length - HEAD.size > self._max_payload:
            raise FrameError("oversized", f"{length - HEAD.size} > {self._max_payload}")
        if not await self._fill(LEN.size + length):
            raise FrameError("malformed", "truncated frame")
        kind, request_id = HEAD.unpack_from(self._buf, LEN.size)
        payload = bytes(self._buf[HEADER_BYTES : LEN.size + length])
        del self._buf[: LEN.size + length]
        try:
            return Frame(Kind(kind), request_id, payload)
        except ValueError as exc:
            raise FrameError("malformed", f"unknown frame kind {kind}") from exc
