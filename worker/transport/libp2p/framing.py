"""Reading tagged frames off libp2p streams, with the one codec (worker/wire/frames.py).

Frames are `u32 len | u8 kind | u64 request_id | payload`, as on TCP. They are read
with our own buffer because py-libp2p's `read_exactly` gives up after 101 partial
reads (a few MB on Yamux), and batches may reach `max_message_size`.
"""

from __future__ import annotations

from typing import Protocol

from worker.wire.frames import LENGTH as LEN
from worker.wire.frames import Frame, FrameBuffer, FrameError, Kind, encode_frame

__all__ = ["LEN", "Frame", "FrameError", "FrameReader", "Kind", "StreamClosed", "encode_frame"]
READ_CHUNK = 1 << 20


class StreamClosed(Exception):
    """The stream ended (reset or a broken connection)."""


class ByteStream(Protocol):
    async def read(self, n: int | None = None) -> bytes: ...


class FrameReader:
    """Frames of one stream; refuses a frame from its header alone when it is too big."""

    def __init__(self, stream: ByteStream, max_payload: int, chunk: int = READ_CHUNK) -> None:
        self._stream = stream
        self._buffer = FrameBuffer(max_payload, tagged=True)
        #: At most this much is taken from the stream at once (the handshake reads little).
        self._chunk = chunk

    async def read_frame(self) -> Frame | None:
        """The next frame, or None on a clean end of stream between frames."""
        while (frame := self._buffer.next_frame()) is None:
            try:
                chunk = await self._stream.read(self._chunk)
            except EOFError:  # StreamEOF: the writer closed its side
                chunk = b""
            except Exception as exc:  # StreamReset, StreamError, a broken connection
                raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
            if not chunk:
                self._buffer.end_of_data()
                return None
            self._buffer.receive_data(chunk)
        assert isinstance(frame, Frame)
        return Frame(Kind(frame.kind), frame.request_id, frame.payload)
