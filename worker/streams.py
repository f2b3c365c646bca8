"""Thin trio readers and writers around the sans-IO frame codec (worker/wire/frames.py).

The codec decides what the bytes mean; these only move bytes between a trio stream and
a `FrameBuffer`, under deadlines: a connection may stay silent between frames for at
most `Deadlines.idle` seconds and must finish a frame it started within
`Deadlines.frame` (a trickle of bytes cannot hold a connection either). A stalled read
raises `Stalled` (a `FrameError`: callers count its reason and close the connection).
Listeners admit at most `max_connections` at a time; the others are closed at once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from worker.vectored import MAX_IOV, write_vectored
from worker.wire.frames import LARGE_PAYLOAD, Frame, FrameBuffer, FrameError, tagged_header
from worker.wire.transactions import ClientFrames, TxRun

#: Bytes asked of the stream per read between frames; below malloc's mmap threshold.
READ_CHUNK = 64 * 1024
#: At most this much is asked at once for the rest of a large payload (a read allocates
#: what it asks for only while the call lasts; it keeps what arrived).
MAX_READ = 4 << 20
#: Bytes asked of a client connection per read (a burst or more).
READ_RUNS = 256 * 1024
#: Frames up to this size that are ready together go out in one write.
COALESCE_BYTES = 256 * 1024
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Stalled(FrameError):
    """A connection silent past its idle deadline, or too slow to finish a frame."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds: `idle` between frames, `frame` to finish one once it started."""

    idle: float = math.inf
    frame: float = math.inf

    @classmethod
    def of_ms(cls, idle: int, frame: int) -> Deadlines:
        return cls(idle / 1000 or math.inf, frame / 1000 or math.inf)


NO_DEADLINES = Deadlines()


async def _fill(stream: trio.abc.ReceiveStream, buffer: FrameBuffer, size: int) -> bool:
    """Feed the buffer one read; False at the end of the stream (FrameError if mid-frame).
    The rest of a large payload is asked for in one read, whatever `size` says."""
    wanted = buffer.wanted
    chunk = await stream.receive_some(min(wanted, MAX_READ) if wanted else size)
    if chunk:
        buffer.receive_data(chunk)
        return True
    buffer.end_of_data()
    return False


async def _read_until(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int,
    deadlines: Deadlines,
    ready: Callable[[], object | None],
) -> object | None:
    """Fill the buffer until `ready()` returns something (returned), or None at a clean
    end of stream. One cancel scope per call, not per read: its deadline is the idle one
    until a frame's first bytes arrive, then that frame's."""
    if deadlines is NO_DEADLINES:
        while (item := ready()) is None:
            if not await _fill(stream, buffer, size):
                return None
        return item
    partial = buffer.partial
    if not partial and deadlines.idle == math.inf:  # no deadline until a frame starts
        if not await _fill(stream, buffer, size):
            return None
        if (item := ready()) is not None:
            return item  # the common case: the frame arrived whole, no scope needed
        partial = buffer.partial
    now = trio.current_time()
    with trio.move_on_at(now + (deadlines.frame if partial else deadlines.idle)) as scope:
        while (item := ready()) is None:
            if not await _fill(stream, buffer, size):
                return None
            if not partial and buffer.partial:  # a frame started with this read
                partial = True
                scope.deadline = trio.current_time() + deadlines.frame
        return item
    if buffer.partial:
        raise Stalled("frame_timeout", "a frame was not finished in time")
    raise Stalled("idle_timeout", "no frame within the idle deadline")


async def read_frame(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int = READ_CHUNK,
    deadlines: Deadlines = NO_DEADLINES,
) -> bytes | Frame | None:
    """The next frame, or None at a clean end of stream."""
    item = buffer.next_frame()
    if item is not None:  # already buffered: no read, no scope
        return item
    return await _read_until(stream, buffer, size, deadlines, buffer.next_frame)  # type: ignore[return-value]


async def read_frames(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int = 1 << 18,
    deadlines: Deadlines = NO_DEADLINES,
) -> list[bytes | Frame] | None:
    """Every frame complete after the next read (at least one), or None at a clean end."""
    items = buffer.frames()
    if items:
        return items

    def ready() -> list[bytes | Frame] | None:
        return buffer.frames() or None

    return await _read_until(stream, buffer, size, deadlines, ready)  # type: ignore[return-value]


async def read_runs(
    stream: trio.abc.ReceiveStream, frames: ClientFrames, deadlines: Deadlines = NO_DEADLINES
) -> list[TxRun] | None:
    """The client transactions complete after the next read, as runs (empty if that read
    completed none but refused some), or None at a clean end of stream."""

    def ready() -> list[TxRun] | None:
        refused = frames.refused
        return frames.runs() or ([] if frames.refused > refused else None)

    return await _read_until(stream, frames, READ_RUNS, deadlines, ready)  # type: ignore[arg-type, return-value]


def _consume(views: list[memoryview], sent: int) -> None:
    """Drop the first `sent` bytes of `views` (what one vectored write took)."""
    while sent:
        first = views[0]
        if sent >= len(first):
            sent -= len(first)
            views.pop(0)
        else:
            views[0] = first[sent:]
            sent = 0


async def send_parts(
    stream: trio.abc.SendStream, parts: list[bytes], timeout: float = math.inf
) -> None:
    """Write `parts` in order without joining them, within `timeout` seconds (else
    trio.TooSlowError). On a socket: one vectored write per kernel write (a large payload
    is never copied to prepend its header), and first a non-blocking one, so what the
    socket takes at once costs no wait and no cancel scope."""
    if not isinstance(stream, trio.SocketStream):
        with trio.fail_after(timeout):
            for part in parts:
                await stream.send_all(part)
        return
    sock = stream.socket
    try:
        views = write_vectored(sock.fileno(), parts)  # what the socket takes at once
        if not views:
            return
        with trio.fail_after(timeout):
            while views:
                _consume(views, await sock.sendmsg(views[:MAX_IOV]))
    except OSError as exc:  # as SocketStream.send_all reports a dead peer
        raise trio.BrokenResourceError from exc


async def write_frame(
    stream: trio.abc.SendStream, kind: int, request_id: int, payload: bytes
) -> None:
    """One tagged frame; a large payload is not copied just to prepend 13 bytes."""
    header = tagged_header(kind, request_id, len(payload))
    if len(payload) <= LARGE_PAYLOAD:
        await stream.send_all(header + payload)
    else:
        await send_parts(stream, [header, payload])


def frame_parts(frames: list[tuple[int, int, bytes]]) -> list[bytes]:
    """Headers and payloads of several tagged frames, small neighbours joined (one write)."""
    parts: list[bytes] = []
    small: list[bytes] = []
    for kind, request_id, payload in frames:
        header = tagged_header(kind, request_id, len(payload))
        if len(payload) <= LARGE_PAYLOAD:
            small += (header, payload)
            continue
        if small:
            parts.append(b"".join(small))
            small = []
        parts += (header, payload)
    if small:
        parts.append(b"".join(small))
    return parts


class ConnectionLimit:
    """At most `limit` connections at a time; `refused` counts the ones closed at once."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit if limit is not None else math.inf
        self.active = 0
        self.refused = 0

    def wrap(
        self,
        handler: Callable[[trio.SocketStream], Awaitable[object]],
        counter: Counter[str] | None = None,
    ) -> Callable[[trio.SocketStream], Awaitable[None]]:
        async def admitted(stream: trio.SocketStream) -> None:
            if self.active >= self.limit:
                self.refused += 1
                if counter is not None:
                    counter["too_many_connections"] += 1
                stream.socket.close()
                return
            self.active += 1
            try:
                await handler(stream)
            finally:
                self.active -= 1

        return admitted


async def serve_tcp(
    host: str,
    port: int,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    *,
    limit: ConnectionLimit | None = None,
    refusals: Counter[str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port and run `handler` per connection; started with "host:port".
    With `limit`, connections beyond it are closed at once (counted in `refusals`)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    serve = limit.wrap(handler, refusals) if limit is not None else handler
    async with trio.open_nursery() as nursery:
        task_status.started(f"{host}:{listeners[0].socket.getsockname()[1]}")
        await trio.serve_listeners(serve, listeners, handler_nursery=nursery)
