"""Tagged frames on libp2p streams, with the one codec (worker/wire/frames.py).

Frames are `u32 len | u8 kind | u64 request_id | payload`, as on TCP. They are read
with our own buffer because py-libp2p's `read_exactly` gives up after 101 partial
reads (a few MB on Yamux), and batches may reach `max_message_size`.

On our own Yamux streams (muxer.py) frames are read as the chunks they arrived in and
written as pieces (header, payload) without joining them: a large payload is not
copied on its way to or from the socket. Any other stream is read and written through
its `read(n)` / `write(bytes)`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol

from worker.transport.libp2p.muxer import LeanStream
from worker.wire.frames import LENGTH as LEN
from worker.wire.frames import Frame, FrameBuffer, FrameError, Kind, encode_frame, tagged_header

__all__ = [
    "LEN",
    "Frame",
    "FrameError",
    "FrameReader",
    "Kind",
    "StreamClosed",
    "encode_frame",
    "tagged_header",
    "write_pieces",
]
READ_CHUNK = 1 << 20
Buffer = bytes | bytearray | memoryview


class StreamClosed(Exception):
    """The stream ended (reset or a broken connection)."""


class ByteStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


class WritableStream(Protocol):
    async def write(self, data: bytes) -> None: ...


def lean_stream(stream: object) -> LeanStream | None:
    """Our Yamux stream under `stream` (a py-libp2p NetStream, or the stream itself)."""
    inner = getattr(stream, "muxed_stream", stream)
    return inner if isinstance(inner, LeanStream) else None


async def write_pieces(stream: WritableStream, pieces: Sequence[Buffer]) -> None:
    """Write the concatenation of `pieces` (without joining them on our Yamux)."""
    lean = lean_stream(stream)
    if lean is not None:
        await lean.write_pieces(pieces)
    else:
        await stream.write(bytes(pieces[0]) if len(pieces) == 1 else b"".join(pieces))


class FrameReader:
    """Frames of one stream; refuses a frame from its header alone when it is too big."""

    def __init__(self, stream: ByteStream, max_payload: int, chunk: int = READ_CHUNK) -> None:
        self._stream = stream
        self._buffer = FrameBuffer(max_payload, tagged=True)
        #: At most this much is taken from the stream at once (the handshake reads little).
        self._chunk = chunk
        # our Yamux hands over what it holds as is (it is bounded by its window already)
        self._lean = lean_stream(stream) if chunk >= READ_CHUNK else None
        self._pending: deque[bytes] = deque()

    async def read_frame(self) -> Frame | None:
        """The next frame, or None on a clean end of stream between frames."""
        while (frame := self._buffer.next_frame()) is None:
            if not self._pending:
                try:
                    self._pending.extend(await self._read())
                except EOFError:  # StreamEOF: the writer closed its side
                    pass
                except Exception as exc:  # StreamReset, StreamError, a broken connection
                    raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
                if not self._pending:
                    self._buffer.end_of_data()
                    return None
            # one chunk at a time, so an oversized header is refused before more is kept
            self._buffer.receive_data(self._pending.popleft())
        assert isinstance(frame, Frame)
        return Frame(Kind(frame.kind), frame.request_id, frame.payload)

    async def _read(self) -> list[bytes]:
        if self._lean is not None:  # all a large payload still needs, in one wake-up
            return await self._lean.read_chunks(max(1, self._buffer.wanted))
        chunk = await self._stream.read(self._chunk)
        return [chunk] if chunk else []
