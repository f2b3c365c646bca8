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
from collections.abc import Callable, Sequence
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
    "read_frames",
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
        #: `bytes`, or read-only views of memory that never changes (our Yamux's)
        self._pending: deque[Buffer] = deque()

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
            self._buffer.receive_data(self._pending.popleft(), frozen=True)
        assert isinstance(frame, Frame)
        return Frame(Kind(frame.kind), frame.request_id, frame.payload)

    async def _read(self) -> list[Buffer]:
        if self._lean is not None:  # all a large payload still needs, in one wake-up
            return await self._lean.read_chunks(max(1, self._buffer.wanted))
        chunk = await self._stream.read(self._chunk)
        return [chunk] if chunk else []


async def read_frames(
    stream: ByteStream, max_payload: int, handle: Callable[[Frame], None]
) -> None:
    """Hand every frame of `stream` to `handle`, in order, until a clean end of stream
    between frames (then return); FrameError for bytes that are no frame (or one that
    `handle` refuses), StreamClosed when the stream breaks. On our own Yamux streams
    `handle` runs in the connection's read loop as the data arrives: no wake-up of the
    caller's task per frame."""
    lean = lean_stream(stream)
    if lean is None:
        reader = FrameReader(stream, max_payload)
        while (frame := await reader.read_frame()) is not None:
            handle(frame)
        return
    await _FramePump(lean, max_payload, handle).run()


class _FramePump:
    """`read_frames` on our Yamux: frames parsed from what the read loop delivers."""

    def __init__(self, stream: LeanStream, max_payload: int, handle: Callable[[Frame], None]):
        self._stream = stream
        self._buffer = FrameBuffer(max_payload, tagged=True)
        self._handle = handle
        self._failure: FrameError | None = None
        self._ended = False

    async def run(self) -> None:
        stream = self._stream
        stream.consume(self._on_data)
        try:
            self._on_data()  # what arrived before
            while self._failure is None and not self._ended:
                try:
                    await stream.wait_for_change()
                except Exception as exc:  # StreamReset, a broken connection
                    raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
                self._on_data()
        finally:
            stream.consume(None)
        if self._failure is not None:
            raise self._failure

    def _on_data(self) -> None:
        """In the read loop (or `run`): frames out of everything unread."""
        if self._failure is not None or self._ended:
            return
        buffer, state = self._buffer, self._stream.state
        try:
            for chunk in self._stream.take_chunks():
                # one chunk at a time, so an oversized header is refused before more is kept
                buffer.receive_data(chunk, frozen=True)
                while (frame := buffer.next_frame()) is not None:
                    assert isinstance(frame, Frame)
                    self._handle(Frame(Kind(frame.kind), frame.request_id, frame.payload))
            if state.remote_closed and not state.buffered and not state.reset:
                buffer.end_of_data()  # Truncated inside a frame
                self._ended = True
        except FrameError as exc:
            self._failure = exc
        if self._failure is not None or self._ended:
            self._stream.wake()  # `run` ends
