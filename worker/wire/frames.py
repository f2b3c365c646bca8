"""The one frame codec: u32 big-endian length-prefixed frames, sans-IO (no sockets here).

Two layouts share it. Plain frames (clients' transactions, worker -> primary reports)::

    u32 length | payload                       length = len(payload)

Tagged frames (worker <-> worker, on TCP and on libp2p streams alike)::

    u32 length | u8 kind | u64 request_id | payload      length = 9 + len(payload)

`FrameBuffer` is fed bytes (`receive_data`) and hands back whole frames (`next_frame`,
None until one is complete), like h11's connection: the caller owns the stream. A frame
is judged from its header alone: too long (`oversized`), shorter than its header or of an
unknown kind (`malformed_frame`) raise `FrameError` before any of its payload is kept,
as long as the caller takes every ready frame before feeding more. A large payload is
kept as the chunks it arrived in and joined once complete (one copy, however many
reads it took; nothing is allocated ahead of the bytes: an announced size costs
nothing until it is sent). `wanted` tells a reader how many bytes that payload still
needs, so it can ask the stream for all of them in one read.
"""

from __future__ import annotations

import struct
from collections.abc import Container
from dataclasses import dataclass
from enum import IntEnum

from worker.errors import Refused

LENGTH = struct.Struct(">I")
TAG = struct.Struct(">BQ")  # kind, request_id
HEADER = struct.Struct(">IBQ")  # length, kind, request_id
MAX_REQUEST_ID = 2**64 - 1
#: Payloads above this size are assembled from their chunks rather than the shared buffer.
LARGE_PAYLOAD = 64 * 1024


class Kind(IntEnum):
    REQUEST = 0
    RESPONSE = 1
    ERROR = 2  # a refused request (libp2p): payload is a short utf-8 reason code
    HANDSHAKE = 3  # libp2p: payload is u16 len | signer PeerId bytes | wire.Handshake
    HANDSHAKE_OK = 4  # libp2p: the dialer's confirmation that it admitted the listener


class FrameError(Refused):
    """Bytes that cannot be framed; the stream carrying them is unusable."""

    source = "framing"


class FrameTooLarge(FrameError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__("oversized", f"frame of {size} bytes > limit {limit}")


class Truncated(FrameError):
    """The stream ended inside a frame (a peer's error; a client's may just be a hang-up)."""

    def __init__(self) -> None:
        super().__init__("malformed_frame", "stream ended inside a frame")


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    request_id: int
    payload: bytes


def frame(payload: bytes) -> bytes:
    """A plain frame."""
    return LENGTH.pack(len(payload)) + payload


def tagged_header(kind: int, request_id: int, size: int) -> bytes:
    """The 13-byte header of a tagged frame whose payload has `size` bytes."""
    return HEADER.pack(TAG.size + size, kind, request_id)


def encode_frame(kind: int, request_id: int, payload: bytes = b"") -> bytes:
    """A tagged frame."""
    return tagged_header(kind, request_id, len(payload)) + payload


class FrameBuffer:
    """Bytes in, whole frames out (plain `bytes`, or `Frame` when `tagged`).

    `max_payload` may be changed between frames (TCP raises it after the Hello).
    `kinds`: the kinds accepted on a tagged stream (default: every `Kind`).
    """

    def __init__(
        self, max_payload: int, *, tagged: bool = False, kinds: Container[int] | None = None
    ) -> None:
        self.max_payload = max_payload
        self._tagged = tagged
        self._head = HEADER.size if tagged else LENGTH.size
        self._kinds: Container[int] = set(Kind) if kinds is None else kinds
        self._buf = bytearray()
        self._pos = 0
        #: the large payload being assembled, if any
        self._chunks: list[bytes | memoryview] | None = None
        self._size = 0  # its announced size
        self._have = 0  # its bytes received so far
        self._large_tag = (0, 0)

    # -- input -------------------------------------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview, *, frozen: bool = False) -> None:
        """Take bytes off the stream. A large payload keeps them by reference when they are
        `bytes`, or when `frozen` says their memory never changes (the read-only views
        our Yamux hands over): the payload is copied once, when whole."""
        if self._chunks is not None:
            n = self._size - self._have
            part = data if len(data) <= n else data[:n]
            self._chunks.append(part if frozen or type(part) is bytes else bytes(part))
            self._have += len(part)
            data = data[len(part) :]
        if data:
            self._buf += data

    @property
    def wanted(self) -> int:
        """Bytes the large payload being assembled still needs (0: none is)."""
        return self._size - self._have if self._chunks is not None else 0

    @property
    def buffered(self) -> int:
        """Bytes held right now (what a peer made us allocate; bounded by the bytes it sent)."""
        return len(self._buf) + (self._have if self._chunks is not None else 0)

    # -- output ------------------------------------------------------------------------
    @property
    def partial(self) -> bool:
        """Bytes of an incomplete frame are buffered (an end of stream now is a truncation)."""
        return self._chunks is not None or len(self._buf) > self._pos

    def end_of_data(self) -> None:
        """The stream ended: fine between frames, a `malformed_frame` inside one."""
        if self.partial:
            raise Truncated

    def next_frame(self) -> bytes | Frame | None:
        """The next whole frame, or None until more data is received."""
        if self._chunks is not None:
            if self._have < self._size:
                return None
            payload, self._chunks = b"".join(self._chunks), None  # one chunk: no copy
            return self._make(*self._large_tag, payload)
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < LENGTH.size:
            return self._need_data()
        (length,) = LENGTH.unpack_from(buf, pos)
        size = length - (TAG.size if self._tagged else 0)
        if size < 0:
            raise FrameError("malformed_frame", f"frame length {length} < its header")
        if size > self.max_payload:
            raise FrameTooLarge(size, self.max_payload)
        if available < self._head:
            return self._need_data()
        kind, request_id = TAG.unpack_from(buf, pos + LENGTH.size) if self._tagged else (0, 0)
        if self._tagged and kind not in self._kinds:
            raise FrameError("malformed_frame", f"unknown frame kind {kind}")
        start, end = pos + self._head, pos + self._head + size
        if end <= len(buf):
            self._pos = end
            with memoryview(buf) as view:
                return self._make(kind, request_id, bytes(view[start:end]))
        if size > LARGE_PAYLOAD:
            with memoryview(buf) as view:
                self._chunks = [bytes(view[start:])]
            self._size, self._have = size, len(buf) - start
            self._large_tag = (kind, request_id)
            buf.clear()
            self._pos = 0
        return self._need_data()

    def frames(self) -> list[bytes | Frame]:
        """Every frame that is complete now."""
        out = []
        while (item := self.next_frame()) is not None:
            out.append(item)
        return out

    # -- helpers -----------------------------------------------------------------------
    def _make(self, kind: int, request_id: int, payload: bytes) -> bytes | Frame:
        return Frame(kind, request_id, payload) if self._tagged else payload

    def _need_data(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        return None
